r"""Does Krylov recycling pay in wall time? GMRES(m) against skr = sorted GCRO-DR(m, k).

Issue 23, item 3. On the convection-diffusion families of :mod:`zoo` (``convdiff-mild``,
``convdiff-dominated``; nonsymmetric P1 on a square, one sparsity pattern) it runs, in
one process and with the same preconditioner (``ilu`` or ``none``),

* ``gmres``: :func:`femno.datagen.solve_sequence` with ``method="gmres"`` (femno's
  GMRES(m), :func:`femno.solvers.krylov.gmres`, modified Gram-Schmidt);
* ``skr``: ``method="skr"`` (greedy-chain sort + GCRO-DR(m, k), recycle space carried);
* ``skr-before`` (``--before REV``): the same with ``femno/solvers/recycle.py`` and
  ``recycle_ops.py`` as they were at git revision ``REV``, loaded from ``git show``.

Per row and method it reports iterations per system, seconds per system (``wall``:
the whole :func:`solve_sequence` call over ``N``, pc setup and sorting included;
``solve``: the Krylov call only, :attr:`SolveStats.solve_s`, which for skr includes
re-preparing the recycle space, :math:`C = A M^{-1} U` and its QR), the time spent
in that re-preparation (``refresh``), and

.. math:: \text{per-iteration ratio} = \frac{(\text{solve} - \text{refresh})_{skr} / \text{its}_{skr}}
          {\text{solve}_{gmres} / \text{its}_{gmres}}, \qquad
          \text{wall ratio} = \text{wall}_{skr} / \text{wall}_{gmres}

(the issue's targets: per-iteration ratio :math:`\le 1.5`; wall ratio
:math:`\le 1/1.2` wherever skr cuts the iterations :math:`\ge 1.8\times`).
``--profile`` adds a cProfile of one skr run per row (top functions by own time).

Writes ``benchmarks/results/recycle.json`` and ``recycle.md``::

    OMP_NUM_THREADS=1 python benchmarks/bench_recycle.py --before 49e6ee4 --profile
    python benchmarks/bench_recycle.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import os
import pstats
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402

from femno.datagen.sequence import solve_sequence  # noqa: E402
from femno.solvers import factory  # noqa: E402
from femno.solvers import recycle as _recycle  # noqa: E402
from femno.solvers.methods import KRYLOV_METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RTOL = 1e-8
#: zoo 2-D P1 grid n per size name ("mid" is added here: 244^2 = 59,536 free dofs)
GRIDS = {"small": 100, "mid": 245}


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in cpu.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = "unknown CPU"
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return f"{name}, {os.cpu_count()} cores, OMP_NUM_THREADS={threads}"


def load_before(rev: str):
    """``recycle.py`` (with its ``recycle_ops.py``, ``recycle_ritz.py``) at git revision ``rev`` as a module."""
    def src(path):
        return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout

    def local(code):
        for name in ("recycle_ops", "recycle_ritz"):
            code = code.replace(f"from femno.solvers.{name} import", f"from _before_{name} import")
        return code

    for name in ("recycle_ops", "recycle_ritz"):
        try:
            code = src(f"femno/solvers/{name}.py")
        except subprocess.CalledProcessError:  # older revisions: the module did not exist yet
            continue
        sub = types.ModuleType(f"_before_{name}")
        exec(compile(local(code), f"before:{name}.py", "exec"), sub.__dict__)
        sys.modules[sub.__name__] = sub
    mod = types.ModuleType("_before_recycle")
    code = local(src("femno/solvers/recycle.py"))
    exec(compile(code, "before:recycle.py", "exec"), mod.__dict__)
    sys.modules[mod.__name__] = mod
    return mod


@contextlib.contextmanager
def use_recycle(mod):
    """Route ``krylov("gcrodr")`` (hence ``skr``) through module ``mod``."""
    old = KRYLOV_METHODS["gcrodr"], factory._rc
    KRYLOV_METHODS["gcrodr"] = dataclasses.replace(old[0], solve=mod.gcrodr)
    factory._rc = mod
    try:
        yield
    finally:
        KRYLOV_METHODS["gcrodr"], factory._rc = old


@contextlib.contextmanager
def timed_prepare(mod, acc):
    """Accumulate the seconds of ``RecycleSpace.prepare`` (the per-system refresh) in acc[0]."""
    orig = mod.RecycleSpace.prepare

    def prepare(self, *args, **kw):
        t = time.perf_counter()
        try:
            return orig(self, *args, **kw)
        finally:
            acc[0] += time.perf_counter() - t

    mod.RecycleSpace.prepare = prepare
    try:
        yield
    finally:
        mod.RecycleSpace.prepare = orig


def systems_for(family, size, N, seed=0):
    old = zoo.GRID.get(size)
    zoo.GRID[size] = (GRIDS[size],) + zoo.GRID["small"][1:]
    try:
        return zoo.FAMILIES[family](size, N, seed)
    finally:
        if old is None:
            del zoo.GRID[size]
        else:
            zoo.GRID[size] = old


def run(systems, method, pc, m, k, mod=None):
    acc = [0.0]
    mod = mod or _recycle
    with use_recycle(mod), timed_prepare(mod, acc):
        t = time.perf_counter()
        res = solve_sequence(systems, method=method, pc=pc, rtol=RTOL, restart=m, k=k,
                             on_fail="warn")
        wall = time.perf_counter() - t
    N = len(systems)
    its = float(np.mean(res.iterations))
    solve = float(sum(s.solve_s for s in res.stats)) / N
    return {"its": its, "wall": wall / N, "solve": solve, "refresh": acc[0] / N,
            "per_it": (solve - acc[0] / N) / max(its, 1e-300),
            "residual_max": float(np.max(res.residuals)),
            "converged": bool(np.all(res.converged))}


def best_of(runs):
    """Fastest times over repeated runs (iterations and residuals are the same in each)."""
    out = dict(runs[0])
    for key in ("wall", "solve", "refresh", "per_it"):
        out[key] = min(r[key] for r in runs)
    out["repeats"] = len(runs)
    return out


def profile_skr(systems, pc, m, k, top=14):
    prof = cProfile.Profile()
    prof.enable()
    solve_sequence(systems, method="skr", pc=pc, rtol=RTOL, restart=m, k=k, on_fail="warn")
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return [ln.replace(str(ROOT) + "/", "") for ln in lines[start:]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["convdiff-mild", "convdiff-dominated"])
    p.add_argument("--sizes", nargs="+", default=["small", "mid"], choices=sorted(GRIDS))
    p.add_argument("--pcs", nargs="+", default=["ilu", "none"])
    p.add_argument("--N", type=int, default=30, help="systems per row (default 30)")
    p.add_argument("--N-mid", type=int, default=20, help="systems per 'mid' row (default 20)")
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--k-ablation", type=int, default=10, metavar="K",
                   help="also run skr with recycle dimension K (default 10; -1: no)")
    p.add_argument("--repeat", type=int, default=3,
                   help="interleaved runs per method; times are the best of them (default 3)")
    p.add_argument("--before", metavar="REV", help="also run recycle.py as of git REV")
    p.add_argument("--profile", action="store_true", help="cProfile one skr run per row")
    p.add_argument("--quick", action="store_true", help="small size, 8 systems, ILU only")
    p.add_argument("--mid-pcs", nargs="+", default=["ilu"],
                   help="preconditioners on 'mid' rows (default ilu: GMRES without one is slow)")
    p.add_argument("--out", default=str(RESULTS / "recycle"), help="output stem (.json, .md)")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.N, a.pcs, a.repeat = ["small"], 8, ["ilu"], 1
    if a.k_ablation is not None and a.k_ablation < 0:
        a.k_ablation = None
    before = load_before(a.before) if a.before else None
    rows = []
    for size in a.sizes:
        N = a.N_mid if size == "mid" else a.N
        pcs = [q for q in a.pcs if size != "mid" or q in a.mid_pcs]
        for fam in a.families:
            systems = systems_for(fam, size, N)
            n = systems[0][0].shape[0]
            for pc in pcs:
                row = {"family": fam, "size": size, "n": n, "N": N, "pc": pc}
                variants = {"gmres": ("gmres", a.k, None), "skr": ("skr", a.k, None)}
                if a.k_ablation is not None:
                    variants[f"skr-k{a.k_ablation}"] = ("skr", a.k_ablation, None)
                if before is not None:
                    variants["skr-before"] = ("skr", a.k, before)
                runs = {key: [] for key in variants}
                for _ in range(a.repeat):  # interleaved, so drifts of the machine hit all alike
                    for key, (method, k, mod) in variants.items():
                        runs[key].append(run(systems, method, pc, a.m, k, mod=mod))
                row.update({key: best_of(rs) for key, rs in runs.items()})
                if a.profile:
                    row["profile"] = profile_skr(systems, pc, a.m, a.k)
                g = row["gmres"]
                for key in variants:
                    if key != "gmres":
                        s = row[key]
                        s["its_cut"] = g["its"] / s["its"]
                        s["per_it_ratio"] = s["per_it"] / g["per_it"]
                        s["wall_ratio"] = s["wall"] / g["wall"]
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "profile"}), flush=True)
    out = {"machine": machine(), "rtol": RTOL, "m": a.m, "k": a.k, "before": a.before,
           "k_ablation": a.k_ablation, "repeat": a.repeat, "rows": rows}
    Path(a.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    text = markdown(out)
    notes = RESULTS / "recycle-notes.md"  # hand-written reading of the table
    if notes.exists() and Path(a.out) == RESULTS / "recycle":
        text += "\n\n" + notes.read_text()
    Path(a.out + ".md").write_text(text + "\n")
    print(f"wrote {a.out}.json / .md")


def markdown(d):
    m, k = d["m"], d["k"]
    keys = (["skr"] + ([f"skr-k{d['k_ablation']}"] if d.get("k_ablation") else [])
            + (["skr-before"] if d["before"] else []))
    head = ["family", "n", "N", "pc", "its gmres"]
    for key in keys:
        head += [f"its {key}", f"cut {key}"]
    head += ["ms/it gmres"] + [f"ms/it {key}" for key in keys] + [f"per-it ratio {key}" for key in keys]
    head += ["wall gmres s"] + [f"wall {key} s" for key in keys] + [f"refresh {key} s" for key in keys]
    head += [f"wall ratio {key}" for key in keys]
    out = [f"# Recycling in wall time: GMRES({m}) vs skr = sorted GCRO-DR({m}, {k})", "",
           "Generated by `benchmarks/bench_recycle.py`"
           + (f" (`--before {d['before']}`: skr-before is recycle.py at that revision, same process)"
              if d["before"] else "") + ".",
           f"Machine: {d['machine']}. rtol {d['rtol']:g}, true residual; seconds per system, "
           f"best of {d.get('repeat', 1)} interleaved runs per method"
           + (f"; skr-k{d['k_ablation']} = sorted GCRO-DR({m}, {d['k_ablation']}), the same "
              "method with a smaller recycle space" if d.get("k_ablation") else "") + ".", "",
           "* cut = its gmres / its skr; ms/it = (solve - refresh) / its (Krylov call only, "
           "pc setup excluded; refresh = re-preparing C = A M^-1 U and its QR for each new matrix);",
           "* per-it ratio = ms/it skr / ms/it gmres (target <= 1.5); wall = whole solve_sequence "
           "per system (pc setup, sort, refresh included); wall ratio = wall skr / wall gmres "
           "(target <= 0.83 where cut >= 1.8).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in d["rows"]:
        g = r["gmres"]
        cells = [r["family"], f"{r['n']:,}", str(r["N"]), r["pc"], f"{g['its']:.1f}"]
        for key in keys:
            cells += [f"{r[key]['its']:.1f}", f"{r[key]['its_cut']:.2f}"]
        cells += [f"{1e3 * g['per_it']:.3g}"] + [f"{1e3 * r[key]['per_it']:.3g}" for key in keys]
        cells += [f"**{r[key]['per_it_ratio']:.2f}**" for key in keys]
        cells += [f"{g['wall']:.4g}"] + [f"{r[key]['wall']:.4g}" for key in keys]
        cells += [f"{r[key]['refresh']:.3g}" for key in keys]
        cells += [f"**{r[key]['wall_ratio']:.2f}**" for key in keys]
        out.append("| " + " | ".join(cells) + " |")
    profiled = [r for r in d["rows"] if "profile" in r]
    if profiled:
        out += ["", "## Where skr's time goes (cProfile, own time, one skr run per row)", ""]
        for r in profiled:
            out += [f"### {r['family']} n={r['n']:,} pc={r['pc']}", "", "```"] + r["profile"] + ["```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
