"""Whole-pipeline benchmark: ``femno generate`` against the loop a user would write.

For each femno family at about 2.5e5 dofs, in one process:

* **naive loop**: ``fam.sample(rng)``, scikit-fem assembly (``fam.assemble(p,
  fast=False)``: ``BilinearForm.assemble`` + ``K[free][:, free]``) and
  ``scipy.sparse.linalg.spsolve`` per sample, with the family's cache cleared before
  each sample (a user's loop keeps no random-field set-up, no fixed matrix, no load
  vectors), solutions kept in memory (nothing written).  It is timed on its first ``--naive-samples`` samples (each sample is
  independent, so its rate does not depend on the count); the page says so.
* **femno generate**: :func:`femno.datagen.generate_dataset` with ``method="auto"``
  on ``--samples`` samples into a temporary store (the auto probe, the writes with
  checksums and fsync, everything), with its own split of the time into sampling,
  assembly, solve and write.
* **per-sample split with the pinned solver**: the family's value-only assembly
  (``fast=True``) against scikit-fem's, the sampling, and the solve of the method
  ``generate`` pinned, each per sample after the first (set-up reported apart).

Ratios: ``generate / naive`` in samples/s (the issue's target is >= 2) and the
share of sampling + assembly in a sample solved by the pinned solver (target <= 20 %
with BoomerAMG on Darcy).

Usage::

    python benchmarks/bench_generate.py                  # all families, 16 samples
    python benchmarks/bench_generate.py --families darcy --samples 8 --quick

Results: ``benchmarks/results/generate.{json,md}``.  OMP_NUM_THREADS=1 unless set.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402

from femno.datagen import generate_dataset  # noqa: E402
from femno.datagen.runner import load_family, nullspace_options, sample_params  # noqa: E402
from femno.datagen.sequence import solve_sequence  # noqa: E402

HERE = Path(__file__).resolve().parent

class Row(NamedTuple):
    """One benchmark row: options at ~2.5e5 and at ~1e4 dofs (``--quick``), a note, the
    family spec when it is not the row's name (a user file: ``FILE.py:NAME``), and how many
    samples the naive loop is timed on when it cannot afford ``--naive-samples`` (3-D LU)."""

    big: dict
    small: dict
    note: str
    spec: str | None = None
    naive_samples: int | None = None


_ZOO = f"{HERE / 'zoo_families.py'}"
FAMILIES = {
    "darcy": Row({"n": 512}, {"n": 100}, "P1, log-normal a at quadrature points"),
    "darcy-pwc": Row({"n": 512}, {"n": 100}, "P1, 4x4 checkerboard a"),
    "darcy-p2": Row({"n": 256, "element": "P2"}, {"n": 50, "element": "P2"}, "P2 Darcy", "darcy"),
    "heat": Row({"n": 512}, {"n": 100}, "one implicit Euler step, M + dt K(a)"),
    "helmholtz": Row({"n": 512}, {"n": 100}, "indefinite K - M(k^2), k0 = 10"),
    "elasticity": Row({"n": 360}, {"n": 70}, "2-D plane strain, vector P1, E log-normal"),
    "poisson": Row({"n": 512}, {"n": 100}, "fixed matrix, random source"),
    # the zoo's families (bench_zoo.py) as user files, written against femno's Family
    "zoo-convdiff-mild": Row({"n": 500}, {"n": 100},
                             "zoo: nonsymmetric P1 convection-diffusion, |w| <= 20",
                             f"{_ZOO}:ConvDiff"),
    "zoo-convdiff-dominated": Row({"n": 500, "dominated": True}, {"n": 100, "dominated": True},
                                  "zoo: convection-dominated, eps 1e-3, streamline diffusion",
                                  f"{_ZOO}:ConvDiff"),
    "zoo-anisotropic": Row({"n": 500}, {"n": 100}, "zoo: rotated anisotropic diffusion, ratio 1e-3",
                           f"{_ZOO}:Anisotropic"),
    "zoo-darcy3d-tet": Row({"n": 63, "cell": "tet"}, {"n": 21, "cell": "tet"},
                           "zoo: 3-D P1 tetrahedra (femno's darcy3d recipe, cell='tet')",
                           "darcy3d", 1),
    "zoo-elasticity3d": Row({"n": 43}, {"n": 15}, "zoo: 3-D vector P1 elasticity with rigid-body modes",
                            f"{_ZOO}:Elasticity3D", 1),
    "zoo-user-file": Row({"n": 500}, {"n": 100},
                         "zoo: a user's file without matrix_terms (scikit-fem assembly every sample)",
                         f"{HERE / 'zoo_user_family.py'}:ReactionDiffusion"),
}


def machine() -> dict:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except OSError:  # pragma: no cover - no lscpu
        model = platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_avg": list(os.getloadavg()), "python": platform.python_version(),
            "numpy": np.__version__}


def naive(fam, seed: int, count: int) -> dict:
    """Sample + scikit-fem assembly + spsolve per sample; rate over ``count`` samples."""
    t = {"sample": 0.0, "assemble": 0.0, "solve": 0.0}
    for i in range(count):
        fam._cache.clear()  # a user's loop caches nothing: no field set-up, no fixed matrix
        t0 = time.perf_counter()
        p = sample_params(fam, seed, i)
        t1 = time.perf_counter()
        s = fam.assemble(p, fast=False)
        t2 = time.perf_counter()
        spla.spsolve(s.A.tocsc(), s.b)
        t3 = time.perf_counter()
        t["sample"] += t1 - t0
        t["assemble"] += t2 - t1
        t["solve"] += t3 - t2
    total = sum(t.values())
    return {"samples": count, "total_s": total, "samples_per_s": count / total,
            **{f"{k}_s_per_sample": v / count for k, v in t.items()}}


def split(fam, seed: int, method: str, pc: str, count: int) -> dict:
    """Per-sample sampling / fast and scikit-fem assembly / pinned solve, after sample 0."""
    t0 = time.perf_counter()
    s0 = fam.assemble(sample_params(fam, seed, 0))  # builds the assembler and field sampler
    setup = time.perf_counter() - t0
    ts, tf, tk, systems = [], [], [], []
    for i in range(1, count + 1):
        a = time.perf_counter()
        p = sample_params(fam, seed, i)
        b = time.perf_counter()
        systems.append(fam.assemble(p))
        c = time.perf_counter()
        fam.assemble(p, fast=False)
        d = time.perf_counter()
        ts.append(b - a), tf.append(c - b), tk.append(d - c)
    res = solve_sequence([s0, *systems], method=method, pc=pc, rtol=1e-8, sort="none",
                         on_fail="ignore", **nullspace_options(fam))  # as generate does
    solve = float(np.median(res.times[1:]))
    sample, fast = float(np.median(ts)), float(np.median(tf))
    return {"setup_first_sample_s": setup, "sample_s": sample, "assemble_fast_s": fast,
            "assemble_skfem_s": float(np.median(tk)), "solve_s": solve,
            "solve_first_s": float(res.times[0]), "mean_iterations": float(np.mean(res.iterations)),
            "share_sample_assemble": (sample + fast) / (sample + fast + solve),
            "share_sample_assemble_skfem": (sample + float(np.median(tk)))
            / (sample + float(np.median(tk)) + solve)}


def run_family(name: str, args) -> dict:
    entry = FAMILIES[name]
    options = dict(entry.small if args.quick else entry.big)
    spec, note = entry.spec or name, entry.note
    fam = load_family(spec, options)
    row = {"family": name, "spec": spec, "options": options, "note": note,
           "dofs": int(fam.assemble(sample_params(fam, args.seed, 0)).dofs)}
    print(f"== {name} {options}: {row['dofs']} dofs", flush=True)
    row["naive"] = naive(load_family(spec, options), args.seed,
                         entry.naive_samples or args.naive_samples)
    print(f"   naive   {row['naive']['samples_per_s']:.3f} samples/s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="femno-bench-gen-"))
    try:
        t0 = time.perf_counter()
        summary = generate_dataset(spec, samples=args.samples, out=tmp / "d.femno", seed=args.seed,
                                   family_options=options, progress=False)
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ("samples_per_s", "total_s", "time_sample_s", "time_assemble_s", "time_solve_s",
            "time_write_s", "mean_iterations", "failures", "method", "explanation")
    row["generate"] = {k: summary.get(k) for k in keys} | {"wall_s": wall}
    row["ratio_generate_over_naive"] = summary["samples_per_s"] / row["naive"]["samples_per_s"]
    print(f"   generate {summary['samples_per_s']:.3f} samples/s ({summary['method']}) -> "
          f"{row['ratio_generate_over_naive']:.2f}x naive", flush=True)
    method, _, pc = str(summary["method"]).partition("+")
    if method not in ("cg", "gmres", "dcg", "skr", "amg-cg"):
        pc = "auto"
    row["split"] = split(load_family(spec, options), args.seed, method, pc or "auto",
                         args.split_samples)
    sp_ = row["split"]
    print(f"   split: sample {sp_['sample_s']*1e3:.1f} ms, assemble {sp_['assemble_fast_s']*1e3:.1f} ms "
          f"(scikit-fem {sp_['assemble_skfem_s']*1e3:.0f} ms), solve {sp_['solve_s']*1e3:.0f} ms "
          f"-> {100*sp_['share_sample_assemble']:.1f} % sampling+assembly", flush=True)
    return row


def write(rows: list, args) -> None:
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tag = "-quick" if args.quick else ""
    info = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "samples": args.samples, "naive_samples": args.naive_samples, "seed": args.seed,
            "rows": rows}
    (out / f"generate{tag}.json").write_text(json.dumps(info, indent=1, default=str))
    m = info["machine"]
    lines = [
        "# Whole pipeline: `femno generate` against the loop a user would write",
        "",
        f"Written {info['date']} (each row's run date in its note) on {m['cpu']}, {m['cores']} cores, OMP_NUM_THREADS={m['omp_threads']}, "
        f"load average at the end {m['load_avg'][0]:.1f}. "
        f"Command: `python benchmarks/bench_generate.py{' --quick' if args.quick else ''}`.",
        "",
        f"* **naive**: per sample `fam.sample`, scikit-fem assembly + `K[free][:, free]`, "
        f"`scipy.sparse.linalg.spsolve`, nothing cached between samples; in memory, nothing "
        f"written; rate measured on the "
        f"first {args.naive_samples} samples.",
        f"* **generate**: `generate_dataset(..., method='auto')`, {args.samples} samples, "
        "everything included (auto's probe on 8 systems, writes with checksums and fsync).",
        "* **split**: medians per sample after the first, the solver `generate` pinned; "
        "share = (sample + assembly) / (sample + assembly + solve).",
        "",
        "| family | dofs | naive samples/s | generate samples/s | generate / naive | pinned solver "
        "| generate split sample/assemble/solve/write s | sample ms | assembly ms (scikit-fem) "
        "| solve ms | share sampling+assembly (with scikit-fem assembly) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        g, s = r["generate"], r["split"]
        lines.append(
            f"| {r['family']} | {r['dofs']:,} | {r['naive']['samples_per_s']:.3f} | "
            f"{g['samples_per_s']:.3f} | **{r['ratio_generate_over_naive']:.2f}** | {g['method']} | "
            f"{g['time_sample_s']:.2f}/{g['time_assemble_s']:.2f}/{g['time_solve_s']:.2f}/"
            f"{g['time_write_s']:.2f} of {g['total_s']:.1f} | {1e3*s['sample_s']:.1f} | "
            f"{1e3*s['assemble_fast_s']:.1f} ({1e3*s['assemble_skfem_s']:.0f}) | {1e3*s['solve_s']:.0f} | "
            f"{100*s['share_sample_assemble']:.1f} % ({100*s['share_sample_assemble_skfem']:.0f} %) |")
    lines += ["", "Per-family notes (from the run): "]
    for r in rows:
        lines.append(f"* {r['family']} ({r['note']}; run {r.get('run', info['date'])}): generate spent "
                     f"{r['generate']['total_s'] - sum(r['generate'][k] for k in ('time_sample_s', 'time_assemble_s', 'time_solve_s', 'time_write_s')):.1f} s "
                     f"outside sample/assemble/solve/write (auto's probe, layout, features); "
                     f"first sample set-up {r['split']['setup_first_sample_s']:.2f} s; naive timed on "
                     f"{r['naive']['samples']} sample(s). "
                     f"{r['generate']['explanation']}")
    (out / f"generate{tag}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / f'generate{tag}.md'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--samples", type=int, default=16, help="samples femno generate writes")
    p.add_argument("--naive-samples", type=int, default=3, help="samples the naive loop times")
    p.add_argument("--split-samples", type=int, default=4, help="samples of the per-sample split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="~1e4 dofs instead of ~2.5e5")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    rows = [run_family(name, args) for name in args.families]
    write(merged(rows, args), args)


def merged(rows: list, args) -> list:
    """The new rows in place of the same families' rows of the results file (others kept,
    each with the date of its run), in FAMILIES order."""
    path = args.out / f"generate{'-quick' if args.quick else ''}.json"
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    by = {r["family"]: {"run": old.get("date", "?"), **r} for r in old["rows"]}
    by.update({r["family"]: {**r, "run": now} for r in rows})
    return [by[f] for f in FAMILIES if f in by]


if __name__ == "__main__":
    main()
