"""FE² benchmark: the same macro problem with the full FE RVE micro model and with EquiNO.

Both runs use the same macro mesh, load, load steps and Newton tolerance, in one
process.  Reported: total, micro and macro seconds of each, the total-time ratio
(full FE² / surrogate FE²) and the micro-time ratio; the force-displacement difference
(load control: the tip displacement at every common load factor, max relative % of
the largest reference displacement); the macro stress-field difference at the final
load (relative L2 over the integration points, and max relative difference of the
element-mean in-plane von Mises stress); Newton iterations per step of both.  The
training time of the surrogate is reported separately (``--training-seconds``, or
the ``train_seconds``/``seconds`` entry of the checkpoint's metadata).  Setup is timed
apart too: constructing each micro model plus one warm-up evaluation (worker processes
started and their RVE solvers built; torch kernels compiled) is excluded from both runs.

Usage::

    # the benchmark of issue 5 (16-core machine, trained EquiNO model of RVE1)
    python benchmarks/bench_fe2.py --macro cook --n 4 --steps 5 --rve RVE1 \\
        --model /tmp/equino_rve1.pt --workers 16

    # validation at a tiny size, closed-form stand-in for the surrogate
    python benchmarks/bench_fe2.py --n 1 --steps 1 --rve RVE3 --surrogate linear --workers 2

    # reuse a reference run (FE² is the expensive part) for another surrogate
    python benchmarks/bench_fe2.py ... --reference-json benchmarks/results/fe2.json

Results go to ``benchmarks/results/fe2.{md,json}`` (``--out DIR`` to change).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from femno.cli._output import _jsonable  # noqa: E402
from femno.errors import ConvergenceError  # noqa: E402
from femno.multiscale.fe2 import plot_fe2, run_fe2, von_mises  # noqa: E402
from femno.multiscale.micro import micro_from_spec  # noqa: E402

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "omp_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next(ln.split(":", 1)[1].strip() for ln in fh
                                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_one(label: str, spec: str, args) -> dict:
    """Run FE² with micro model ``spec``; returns the result and its timings."""
    print(f"[{label}] micro {spec} ...", flush=True)
    t0 = time.perf_counter()
    micro = micro_from_spec(spec, rve=args.rve, workers=args.workers, scheduler=args.scheduler,
                            tol=args.tol, device=args.device)
    # warm-up outside the timings, for both runs alike: worker processes started and RVE
    # solvers built (one zero-strain point per worker), torch kernels compiled
    micro.stress_and_tangent(np.zeros((max(1, int(getattr(micro, "workers", 1))), 3)))
    micro.seconds, micro.evaluations = 0.0, 0
    setup_s = time.perf_counter() - t0
    print(f"[{label}] setup and warm-up {setup_s:.2f} s (not in the timings below)", flush=True)

    def progress(info):
        print(f"[{label}]   load factor {info['load_factor']:.4g}: {info['iterations']} Newton "
              f"iterations, residuals {' '.join(f'{r:.1e}' for r in info['residuals'])}",
              flush=True)

    try:
        res = run_fe2(args.macro, micro, steps=args.steps, n=args.n, cell=args.cell,
                      load=args.load, rtol=args.rtol, maxiter=args.maxiter, progress=progress)
    finally:
        micro.close()
    out = res.to_dict()
    out.update(spec=spec, setup_s=setup_s, micro_evaluations=micro.evaluations,
               workers=int(getattr(micro, "workers", 1) or 1),
               stress=res.stress, element_von_mises=von_mises(res.element_stress))
    print(f"[{label}] total {res.total_s:.3f} s (micro {res.micro_s:.3f} s, macro "
          f"{res.macro_s:.3f} s), {micro.evaluations} micro evaluations", flush=True)
    return {"record": out, "result": res}


def compare(ref: dict, sur: dict) -> dict:
    """Differences of the surrogate run against the reference run."""
    lam_r, lam_s = np.asarray(ref["load_factor"]), np.asarray(sur["load_factor"])
    d_r, d_s = np.asarray(ref["displacement"]), np.asarray(sur["displacement"])
    common = np.intersect1d(np.round(lam_r, 12), np.round(lam_s, 12))
    pick = lambda lam, d: d[np.searchsorted(np.round(lam, 12), common)]  # noqa: E731
    diff = np.abs(pick(lam_s, d_s) - pick(lam_r, d_r))
    scale = np.abs(d_r).max()
    s_r, s_s = np.asarray(ref["stress"]), np.asarray(sur["stress"])
    vm_r, vm_s = np.asarray(ref["element_von_mises"]), np.asarray(sur["element_von_mises"])
    return {
        "common_load_factors": common.tolist(),
        "force_displacement_max_rel_pct": float(100 * diff.max() / scale),
        "final_displacement_rel_pct": float(100 * abs(d_s[-1] - d_r[-1]) / abs(d_r[-1])),
        "stress_field_rel_l2_pct": float(100 * np.linalg.norm(s_s - s_r) / np.linalg.norm(s_r)),
        "von_mises_max_rel_pct": float(100 * np.abs(vm_s - vm_r).max() / np.abs(vm_r).max()),
        "total_time_ratio": ref["total_s"] / sur["total_s"],
        "micro_time_ratio": ref["micro_s"] / max(sur["micro_s"], 1e-12),
        "micro_seconds_per_point_reference": ref["micro_s"] / max(ref["micro_evaluations"], 1),
        "micro_seconds_per_point_surrogate": sur["micro_s"] / max(sur["micro_evaluations"], 1),
    }


def training_seconds(args):
    if args.training_seconds is not None:
        return args.training_seconds
    if not args.surrogate.startswith("equino:"):
        return None
    try:
        from femno.operators.checkpoint import read_checkpoint

        meta = read_checkpoint(args.surrogate.split(":", 1)[1]).get("meta", {})
    except Exception:  # noqa: BLE001 - metadata is optional
        return None
    for key in ("train_seconds", "training_seconds", "seconds", "fit_seconds"):
        if isinstance(meta.get(key), (int, float)):
            return float(meta[key])
    return None


def write(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fe2.json").write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False))
    m, c, a = report["machine"], report["comparison"], report["arguments"]
    r, s = report["reference"], report["surrogate"]
    t = report["training_seconds"]
    train = "n/a" if t is None else f"{t:.1f} s"
    L = ["# FE² benchmark: full FE RVE micro model vs surrogate", "",
         f"Machine: {m.get('cpu_model', '?')}, {m['cpus']} cores"
         + (f", GPU {m['gpu']}" if m.get("gpu") else "")
         + f", OMP_NUM_THREADS={m['omp_threads']}. {a.get('note') or ''}", "",
         f"Macro problem `{a['macro']}`, n={a['n']} ({a['cell']}), {r['n_points']} macro "
         f"integration points, {r['n_dofs']} dofs, {a['steps']} load steps, macro rtol "
         f"{a['rtol']}; RVE `{a['rve']}`, RVE Newton tol {a['tol']}, reference FE micro model "
         f"in {r.get('workers') or a['workers']} worker process(es)"
         + (f", scheduler {a['scheduler']}" if a.get("scheduler") else "") + ".", "",
         f"Command: `{report['command']}`", "",
         f"Setup + warm-up, excluded from the timings: reference {r.get('setup_s', 0):.2f} s, "
         f"surrogate {s.get('setup_s', 0):.2f} s.", "",
         "| run | micro model | total s | micro s | macro s | micro evaluations | "
         "Newton iterations per step |", "|---|---|---|---|---|---|---|"]
    for label, x in (("reference", r), ("surrogate", s)):
        L.append(f"| {label} | `{x['spec']}` | {x['total_s']:.3f} | {x['micro_s']:.3f} | "
                 f"{x['macro_s']:.3f} | {x['micro_evaluations']} | "
                 f"{' '.join(map(str, x['iterations']))} |")
    L += ["", "| metric | value |", "|---|---|",
          f"| total time ratio (reference / surrogate) | {c['total_time_ratio']:.1f}x |",
          f"| micro time ratio | {c['micro_time_ratio']:.1f}x |",
          f"| micro seconds per point, reference | {c['micro_seconds_per_point_reference']:.3g} |",
          f"| micro seconds per point, surrogate | {c['micro_seconds_per_point_surrogate']:.3g} |",
          f"| force-displacement difference, max relative | "
          f"{c['force_displacement_max_rel_pct']:.3f} % |",
          f"| final tip displacement difference | {c['final_displacement_rel_pct']:.3f} % |",
          f"| macro stress field, relative L2 | {c['stress_field_rel_l2_pct']:.3f} % |",
          f"| element von Mises, max relative | {c['von_mises_max_rel_pct']:.3f} % |",
          f"| surrogate training time (separate) | {train} |",
          "", "Force-displacement (tip displacement in mm at each load factor):", "",
          "| load factor | force N/mm | reference | surrogate |", "|---|---|---|---|"]
    lam_s = np.round(np.asarray(s["load_factor"]), 12)
    for lam, f, d in zip(r["load_factor"], r["force"], r["displacement"], strict=True):
        k = np.nonzero(lam_s == round(lam, 12))[0]
        ds = f"{s['displacement'][k[0]]:.6g}" if k.size else "-"
        L.append(f"| {lam:.4g} | {f:.4g} | {d:.6g} | {ds} |")
    (out_dir / "fe2.md").write_text("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--macro", default="cook", help="cook | lprofile")
    ap.add_argument("--n", type=int, default=4, help="macro elements per side (default 4)")
    ap.add_argument("--cell", default="quad", help="quad | tri")
    ap.add_argument("--steps", type=int, default=3, help="load steps (default 3)")
    ap.add_argument("--load", type=float, default=None, help="total load N/mm (default per problem)")
    ap.add_argument("--rve", default="RVE1")
    ap.add_argument("--model", default=None, help="EquiNO checkpoint (sets --surrogate equino:MODEL)")
    ap.add_argument("--reference", default="fe", help="reference micro spec (default fe)")
    ap.add_argument("--surrogate", default=None, help="surrogate micro spec (default equino:MODEL)")
    ap.add_argument("--reference-json", type=Path, default=None,
                    help="reuse the reference run of an earlier fe2.json (same problem)")
    ap.add_argument("--workers", type=int, default=None, help="FE micro workers (default: all cores)")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address for the FE micro model")
    ap.add_argument("--tol", type=float, default=1e-10, help="RVE Newton tolerance")
    ap.add_argument("--rtol", type=float, default=1e-8, help="macro Newton tolerance")
    ap.add_argument("--maxiter", type=int, default=15)
    ap.add_argument("--device", default=None, help="torch device of the surrogate")
    ap.add_argument("--training-seconds", type=float, default=None)
    ap.add_argument("--note", default="", help="free text for the report (e.g. 'machine shared')")
    ap.add_argument("--plot", type=Path, default=None, help="also save a comparison figure")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.surrogate is None:
        if args.model is None:
            ap.error("give --model PATH (EquiNO checkpoint) or --surrogate SPEC")
        args.surrogate = f"equino:{args.model}"
    args.workers = args.workers or os.cpu_count()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass

    if args.reference_json is not None:
        old = json.loads(args.reference_json.read_text())
        # the load is compared as applied (the forces of the curve) below: a default load
        # ("load": None) may have changed between femno versions
        keys = ("macro", "n", "cell", "steps", "rve", "rtol", "tol")
        if any(old["arguments"].get(k) != getattr(args, k) for k in keys):
            sys.exit(f"--reference-json was run with other settings: {old['arguments']}")
        ref, ref_res = old["reference"], None
        ref.setdefault("workers", old["arguments"].get("workers"))
        print(f"[reference] reused from {args.reference_json}", flush=True)
    else:
        run = run_one("reference", args.reference, args)
        ref, ref_res = run["record"], run["result"]
    try:
        sur_run = run_one("surrogate", args.surrogate, args)
    except ConvergenceError as exc:  # record the failure instead of losing the reference run
        failed = {"benchmark": "fe2", "arguments": {k: str(v) for k, v in vars(args).items()},
                  "machine": machine(), "reference": ref, "surrogate_error": str(exc)}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fe2.json").write_text(json.dumps(_jsonable(failed), indent=1))
        (args.out / "fe2.md").write_text(f"# FE² benchmark\n\nThe surrogate run "
                                         f"`{args.surrogate}` failed: {exc}\n")
        print(f"surrogate FE² failed: {exc} (reference kept in {args.out / 'fe2.json'})")
        sys.exit(3)
    sur = sur_run["record"]
    if ref_res is None and not np.allclose(ref["force"], sur["force"][:len(ref["force"])]):
        sys.exit(f"--reference-json was run at other loads: forces {ref['force']} against "
                 f"{sur['force']} now (pass --load {ref['force'][-1]:g})")
    report = {
        "benchmark": "fe2",
        "command": "python benchmarks/bench_fe2.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "reference": ref, "surrogate": sur, "comparison": compare(ref, sur),
        "training_seconds": training_seconds(args),
    }
    write(report, args.out)
    c = report["comparison"]
    print(f"total time ratio {c['total_time_ratio']:.1f}x, force-displacement max difference "
          f"{c['force_displacement_max_rel_pct']:.3f} %, stress field rel. L2 "
          f"{c['stress_field_rel_l2_pct']:.3f} % -> {args.out / 'fe2.md'}")
    if args.plot:  # a reused reference contributes its recorded curve
        from types import SimpleNamespace

        ref_curve = ref_res if ref_res is not None else SimpleNamespace(
            displacement=np.asarray(ref["displacement"]), reaction=np.asarray(ref["reaction"]))
        plot_fe2(sur_run["result"], args.plot, others=[(f"reference ({args.reference})", ref_curve)],
                 title=f"{args.macro}: {args.reference} vs {args.surrogate}")
    return report


if __name__ == "__main__":
    main()
