"""Data-generation zoo: every solver strategy on families ``auto`` was never tuned on.

For each family of ``zoo.py`` (11 families, ~1e4 and ~2.5e5 dofs) the same ``N``
systems are solved in one process by every method x preconditioner that applies:

* ``spsolve``      -- the loop a user writes: ``scipy.sparse.linalg.spsolve`` per system
* ``direct``       -- femno's direct path (CHOLMOD / MUMPS with symbolic reuse, backend
                      measured; :class:`femno.datagen.strategy.LUStrategy`)
* ``cg+amg``       -- pyamg SA-AMG CG, hierarchy updated in place (SPD-looking rows)
* ``dcg+amg``      -- deflated CG, deflation space carried (SPD-looking rows)
* ``gmres+ilu``, ``gmres+amg`` -- GMRES(40) with ILU / AMG
* ``skr+ilu``      -- sorted GCRO-DR(40, 20) recycling with ILU (nonsymmetric rows)
* ``hypre``        -- BoomerAMG through PETSc (CG on SPD rows, GMRES otherwise), loop
* ``cg+gamg``      -- CG with PETSc's GAMG on the rows whose near-nullspace the user
                      gives (elasticity: rigid-body modes, :data:`zoo.NEAR_NULLSPACE`;
                      there every AMG method and ``auto`` get the modes too)
* ``auto``         -- femno's pick, timed like the others

at rtol 1e-8 (true residual). A method whose projected total exceeds the cap
(``max(--cap-s, 10 x the best total so far)``) is stopped and reported as such; sparse
LU on 3-D rows at ~2.5e5 dofs is not attempted (minutes and gigabytes per factor).
Reported per row: seconds per system of each method, the best, ``auto``'s pick and
auto / best. Results: ``benchmarks/results/zoo.{json,md}``.

Usage::

    python benchmarks/bench_zoo.py --size small            # 11 rows at ~1e4 dofs
    python benchmarks/bench_zoo.py --size large --systems 12
    python benchmarks/bench_zoo.py --families heat,helmholtz --size small
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from zoo import FAMILIES, NEAR_NULLSPACE  # noqa: E402

from femno.datagen import solve_sequence  # noqa: E402
from femno.datagen.auto import analyze, direct_feasible  # noqa: E402

RTOL = 1e-8


class _Cap(Exception):
    pass


def _capped(cap_s, N, *, project=True):
    """A solve_sequence callback that stops a method projected to run past ``cap_s``.

    The projection is the elapsed time plus the remaining systems at the median cost of
    the last three: setup and probe solves (``direct``'s analysis, ``auto``'s race) are
    front-loaded and would make a mean-based projection stop a method that pays later.
    ``project=False`` (``auto``, whose probe solves of losing candidates are the most
    expensive) stops only once the elapsed time passes the cap.
    """
    t0 = time.perf_counter()
    stamps = [t0]

    def cb(i, x, stats):
        stamps.append(time.perf_counter())
        done = len(stamps) - 1
        el = stamps[-1] - t0
        recent = float(np.median(np.diff(stamps[-4:])))
        projected = el + (N - done) * recent
        if ((project and projected > cap_s) or el > cap_s) and done < N:
            raise _Cap(projected)

    return cb


def run_method(name, systems, cap_s, info, nns=None):
    """Seconds for all systems (or None + note), mean iterations, max residual.

    ``nns``: ``{"near_nullspace": B, "block_size": bs}`` for the AMG methods, or None.
    """
    nns = nns or {}
    N = len(systems)
    t0 = time.perf_counter()
    its = []
    try:
        if name == "spsolve":
            res = []
            for A, b in systems:
                x = spla.spsolve(A.tocsc(), b)
                res.append(np.linalg.norm(b - A @ x) / np.linalg.norm(b))
                el = time.perf_counter() - t0
                if el / len(res) * N > cap_s and len(res) < N:
                    raise _Cap(el / len(res) * N)
            if max(res) > RTOL * (1 + 1e-6):  # the user's loop does not check; we do
                return None, {"note": f"failed: residual {max(res):.2e} > rtol {RTOL:g}",
                              "residual": max(res), "seconds": time.perf_counter() - t0}
            return time.perf_counter() - t0, {"residual": max(res), "method": "spsolve"}
        if name == "hypre":
            from femno.solvers import krylov

            spd = info["symmetric"] and info["positive_diagonal"]
            solver = krylov("cg" if spd else "gmres", pc="hypre", backend="petsc", rtol=RTOL,
                            restart=40, on_fail="ignore", maxiter=2000, **nns)
            res = []
            for A, b in systems:
                x = solver(A, b)
                its.append(solver.stats.iterations)
                r = np.linalg.norm(b - A @ x) / np.linalg.norm(b)
                res.append(r)
                el = time.perf_counter() - t0
                if not solver.stats.converged:
                    return None, {"note": f"did not converge ({solver.stats.reason})"}
                if el / len(res) * N > cap_s and len(res) < N:
                    raise _Cap(el / len(res) * N)
            return time.perf_counter() - t0, {"residual": max(res), "iterations": float(np.mean(its)),
                                              "method": "cg+hypre" if spd else "gmres+hypre"}
        kw = {"auto": dict(method="auto"), "direct": dict(method="direct"),
              "cg+amg": dict(method="amg-cg"), "dcg+amg": dict(method="dcg", pc="amg"),
              "gmres+ilu": dict(method="gmres", pc="ilu"), "gmres+amg": dict(method="gmres", pc="amg"),
              "skr+ilu": dict(method="skr", pc="ilu"), "cg+gamg": dict(method="cg", pc="gamg")}[name]
        amg = name in ("auto", "cg+amg", "dcg+amg", "gmres+amg", "cg+gamg")
        r = solve_sequence(systems, rtol=RTOL, callback=_capped(cap_s, N, project=name != "auto"), on_fail="raise",
                           maxiter=3000, **kw, **(nns if amg else {}))
        return r.total_s, {"residual": float(r.residuals.max()),
                           "iterations": float(r.iterations.mean()), "method": r.method,
                           "explanation": r.explanation if name == "auto" else ""}
    except _Cap as c:
        return None, {"note": f"stopped: projected {c.args[0]:.3g} s > cap {cap_s:.3g} s"}
    except Exception as exc:  # a method that fails on a row is reported, not fatal
        return None, {"note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}


def _warm_up():
    """Load PETSc, MUMPS and hypre once (a one-off per process, ~0.4 s) so that the first
    method to use them is not charged for it."""
    import scipy.sparse as sp

    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(400, 400), format="csr")
    for kw in (dict(method="direct"), dict(method="auto")):
        solve_sequence([(T * (1 + 0.1 * i), np.ones(400)) for i in range(8)], **kw)
    try:
        from femno.solvers import krylov

        krylov("cg", pc="hypre", backend="petsc")(T, np.ones(400))
    except ImportError:  # pragma: no cover
        pass


def methods_for(info, *, large, dim3, nns=False):
    spd = info["symmetric"] and info["positive_diagonal"]
    out = []
    if not (large and dim3):
        out += ["direct", "spsolve"]
    out += ["cg+amg", "dcg+amg"] if spd else []
    out += ["gmres+amg", "gmres+ilu"]
    if not info["symmetric"]:
        out += ["skr+ilu"]
    try:
        from femno.solvers.petsc_backend import have_petsc

        if have_petsc():
            out.append("hypre")
            if nns and spd:
                out.append("cg+gamg")
    except ImportError:  # pragma: no cover
        pass
    return out + ["auto"]


def machine() -> str:
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except OSError:  # pragma: no cover
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, OMP_NUM_THREADS=1"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("small", "large"), default="small")
    p.add_argument("--systems", type=int, default=None, help="systems per family (24 small, 12 large)")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--cap-s", type=float, default=None, help="per-method cap (30 small, 120 large)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    N = a.systems or (24 if a.size == "small" else 12)
    cap0 = a.cap_s or (30.0 if a.size == "small" else 120.0)
    names = a.families.split(",")
    unknown = sorted(set(names) - set(FAMILIES))
    if unknown:
        p.error(f"unknown families {unknown}; valid: {', '.join(FAMILIES)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / f"zoo-{a.size}.json"
    rows = json.loads(jpath.read_text())["rows"] if jpath.exists() else {}
    warnings.simplefilter("ignore")
    _warm_up()
    for fam in names:
        t = time.perf_counter()
        systems = FAMILIES[fam](a.size, N, a.seed)
        asm_s = time.perf_counter() - t
        info = analyze([A for A, _ in systems])
        row = {"n": info["n"], "nnz": info["nnz"], "N": N, "assemble_s": asm_s,
               "symmetric": info["symmetric"], "positive_diagonal": info["positive_diagonal"],
               "direct_feasible": direct_feasible(systems[0][0])[0], "methods": {}}
        best = np.inf
        dim3 = fam in ("darcy3d", "elasticity3d")
        nns = None
        if fam in NEAR_NULLSPACE:
            B, bs = NEAR_NULLSPACE[fam](a.size)
            nns = {"near_nullspace": B, "block_size": bs}
            row["near_nullspace"] = f"{B.shape[1]} modes, block size {bs}"
        for m in methods_for(info, large=a.size == "large", dim3=dim3, nns=nns is not None):
            cap = max(cap0, 10 * best) if np.isfinite(best) else max(cap0, 4 * cap0)
            total, extra = run_method(m, systems, cap, info, nns)
            row["methods"][m] = {"total_s": total, **extra}
            if total is not None and m != "auto":
                best = min(best, total)
            print(f"{fam:20s} {m:10s} " + (f"{total / N * 1e3:9.2f} ms/system" if total else
                                           f"{extra.get('note', '')}"), flush=True)
        if a.size == "large" and dim3:
            row["methods"]["direct"] = {"total_s": None, "note": "not run: sparse LU of a 3-D "
                                        "graph at this size takes minutes and gigabytes"}
        ok = {k: v["total_s"] for k, v in row["methods"].items() if v["total_s"] and k != "auto"}
        bk = min(ok, key=ok.get) if ok else None  # None: no method met rtol on this row
        row["best"], row["best_s"] = bk, ok.get(bk)
        au = row["methods"]["auto"]
        row["auto_ratio"] = au["total_s"] / ok[bk] if au["total_s"] and bk else None
        print(f"{fam:20s} best {bk} {(ok[bk] / N * 1e3) if bk else float('nan'):.2f} ms/system; "
              f"auto {au.get('method')} ratio {row['auto_ratio']}", flush=True)
        rows[fam] = row
        jpath.write_text(json.dumps({"machine": machine(), "size": a.size, "rtol": RTOL,
                                     "rows": rows}, indent=1))
    write_md(out)


def write_md(out: Path):
    cols = ["spsolve", "direct", "cg+amg", "dcg+amg", "gmres+amg", "gmres+ilu", "skr+ilu",
            "hypre", "cg+gamg", "auto"]
    lines = ["# Data-generation zoo: every method on families auto was not tuned on", "",
             "Produced by `python benchmarks/bench_zoo.py --size small|large` "
             "(see its docstring). Seconds per system (total / N, first systems' setup "
             "included), rtol 1e-8. `-` = does not apply; `stop` = stopped at the cap "
             "(projected far slower than the best); `fail` = did not converge / broke down. "
             "**bold** = best. auto/best is the ratio of totals. `(+modes)`: the user "
             "gives the rigid-body near-nullspace (`solve_sequence(near_nullspace=)`), which "
             "every AMG method and auto get; cg+gamg runs only there.", ""]
    for size in ("small", "large"):
        j = out / f"zoo-{size}.json"
        if not j.exists():
            continue
        d = json.loads(j.read_text())
        lines += [f"## ~{'1e4' if size == 'small' else '2.5e5'} dofs", "",
                  f"Machine: {d['machine']}.", "",
                  "| family | n | N | " + " | ".join(cols) + " | auto pick | auto/best |",
                  "|---" * (len(cols) + 5) + "|"]
        for fam, r in d["rows"].items():
            cells = []
            for c in cols:
                m = r["methods"].get(c)
                if m is None:
                    cells.append("-")
                elif m["total_s"] is None:
                    note = m.get("note", "")
                    cells.append("stop" if note.startswith("stopped") else
                                 "n/r" if note.startswith("not run") else "fail")
                else:
                    v = f"{m['total_s'] / r['N']:.3g}"
                    cells.append(f"**{v}**" if c == r["best"] else v)
            au = r["methods"]["auto"]
            pick = (au.get("method") or "").replace("auto->", "")
            ratio = (f"{r['auto_ratio']:.2f}" if r["auto_ratio"] else
                     "no method met rtol" if r.get("best") is None else "fail")
            name = f"{fam} (+modes)" if r.get("near_nullspace") else fam
            lines.append(f"| {name} | {r['n']:,} | {r['N']} | " + " | ".join(cells)
                         + f" | {pick} | {ratio} |")
        ratios = [r["auto_ratio"] for r in d["rows"].values() if r["auto_ratio"]]
        if ratios:
            lines += ["", f"auto/best: median {np.median(ratios):.2f}, worst {max(ratios):.2f} "
                      f"over {len(ratios)} rows; rows within 1.25x: "
                      f"{sum(r <= 1.25 for r in ratios)}/{len(ratios)}.",
                      "", "direct / spsolve (femno's direct path against the user's loop): " +
                      ", ".join(f"{f} {r['methods']['direct']['total_s'] / r['methods']['spsolve']['total_s']:.2f}"
                                for f, r in d["rows"].items()
                                if r["methods"].get("direct", {}).get("total_s")
                                and r["methods"].get("spsolve", {}).get("total_s")) + "."]
        lines.append("")
    notes = HERE / "results" / "zoo-notes.md"  # hand-written reading of the tables
    if notes.exists():
        lines += [notes.read_text()]
    (out / "zoo.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
