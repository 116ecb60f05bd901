"""Data-generation benchmark: every sequence strategy side by side, per recipe.

For each recipe of ``data_gen/recipes.py`` a sequence of systems is assembled once
(deterministic seeds), features are computed, and every strategy of
:func:`femno.datagen.solve_sequence` solves the *same* systems in one process at
rtol 1e-8: GMRES(40) per system (the SKR paper's baseline) and SKR / recycling /
fresh GCRO-DR with the same preconditioner, warm-started SKR, AMG-CG with hierarchy
reuse, fresh AMG-CG, sparse LU fresh and with reuse, block solves (fixed matrix),
and ``auto``. Reported: total time (incl. sorting), samples/s, mean iterations,
failures, the sort cost and time ratios. Krylov rows with weak preconditioners
(none, Jacobi, SSOR, ILU(0): hundreds to thousands of iterations per system) use the
first ``--slow-systems`` systems and are extrapolated per system; the table says so.

Usage::

    python benchmarks/bench_datagen.py                     # all recipes, 200 systems
    python benchmarks/bench_datagen.py --recipes skr-darcy --systems 40 --out /tmp/r

Results go to ``benchmarks/results/datagen.{json,md}``. Set OMP_NUM_THREADS=1 on
small machines (the script does so when it is unset): threaded BLAS slows the
block Gram-Schmidt of GCRO-DR down on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_gen"))
from recipes import RECIPES  # noqa: E402

from femno.datagen import solve_sequence, sort_systems  # noqa: E402
from femno.datagen.auto import direct_feasible  # noqa: E402
from femno.datagen.strategy import same_pattern  # noqa: E402

HERE = Path(__file__).resolve().parent

#: recipe -> default size override for the benchmark (None = the recipe's default)
SIZES = {"skr-darcy": None, "skr-darcy-paper": None, "skr-thermal": None, "skr-poisson": None,
         "skr-helmholtz": None, "darcy3d": None}


#: preconditioners CG may use (symmetric for SPD matrices)
CG_PCS = ("none", "jacobi", "ssor", "ic")


def strategies(fixed: bool, spd: bool, pcs, *, large: bool = False):
    """(label, kwargs, slow) triples for one recipe.

    ``slow`` rows run on the first ``--slow-systems`` systems only. For SPD recipes
    the SKR comparison also runs with the Krylov method made for SPD matrices:
    plain PCG per system and SKR with deflated CG (sorted, deflation space carried,
    :func:`femno.solvers.recycle_cg.deflated_cg`), same preconditioner.
    """
    out = []
    for pc in pcs:
        if pc == "ic" and not spd:
            continue  # incomplete Cholesky needs an SPD matrix
        slow = pc != "ilu"  # hundreds to thousands of iterations per system
        out += [
            (f"GMRES(40) + {pc}", dict(method="gmres", pc=pc, restart=40), slow),
            (f"GCRO-DR fresh + {pc}", dict(method="gcrodr", pc=pc), slow),
            (f"recycle unsorted + {pc}", dict(method="recycle", pc=pc), slow),
            (f"SKR + {pc}", dict(method="skr", pc=pc), slow),
            (f"SKR warm + {pc}", dict(method="skr", pc=pc, warm_start=True), slow),
        ]
        if spd and pc in CG_PCS:
            out += [(f"CG fresh + {pc}", dict(method="cg", pc=pc), large),
                    (f"SKR deflated CG + {pc}", dict(method="dcg", pc=pc, sort="greedy"), large)]
    if spd:
        out += [("AMG-CG fresh hierarchy", dict(method="amg-cg-fresh"), False),
                ("AMG-CG hierarchy reuse", dict(method="amg-cg"), False),
                ("AMG-CG reuse, sorted + warm", dict(method="amg-cg", sort="greedy",
                                                     warm_start=True), False)]
    out += [("LU fresh (splu)", dict(method="direct-fresh"), False),
            ("LU with reuse", dict(method="direct"), False)]
    if fixed:
        out.append(("block (one LU, all rhs)", dict(method="block"), False))
    out.append(("auto", dict(method="auto"), False))
    return out


def build(recipe: str, n_systems: int, seed: int):
    cls = RECIPES[recipe]
    fam = cls() if SIZES.get(recipe) is None else cls(n=SIZES[recipe])
    systems, feats = [], []
    for i in range(n_systems):
        params = fam.sample(np.random.default_rng([seed, i]))
        feats.append(fam.features(params))
        s = fam.assemble(params)
        A = s.A
        if systems and same_pattern(A, systems[0][0]):  # share indices: 200 3D matrices fit
            A0 = systems[0][0]
            A = sp.csr_matrix((A.data, A0.indices, A0.indptr), shape=A.shape)
            A.has_sorted_indices = A0.has_sorted_indices
        systems.append((A, s.b))
    return fam, systems, np.asarray(feats)


def run_recipe(recipe, args):
    t0 = time.perf_counter()
    fam, systems, feats = build(recipe, args.systems, args.seed)
    n = systems[0][0].shape[0]
    print(f"\n== {recipe}: {len(systems)} systems, {n} dofs, fixed matrix {fam.fixed_matrix}, "
          f"spd {fam.spd}; assembly {time.perf_counter() - t0:.1f} s", flush=True)
    _, sort_s = sort_systems(feats, method="greedy")
    # weak preconditioners cost minutes per system beyond ~20k dofs on 2 cores
    pcs = args.pcs if n <= 20_000 else [pc for pc in args.pcs if pc in ("ssor", "ic", "ilu")]
    if n > 120_000 and not args.all:  # one-level preconditioners: thousands of iterations
        pcs = []
    direct_ok, no_direct = direct_feasible(systems[0][0])
    rows = []
    t_rec = time.time()
    load0 = os.getloadavg()[0]
    for label, kw, slow in strategies(fam.fixed_matrix, fam.spd, pcs, large=n > 20_000):
        if kw["method"].startswith("direct") and not direct_ok and not args.all:
            rows.append(dict(recipe=recipe, strategy=label, skipped=no_direct))
            print(f"  {label:<28} skipped: {no_direct}")
            continue
        m = min(args.slow_systems, len(systems)) if slow else len(systems)
        sub = systems[:m]
        f = feats[:m]
        t, c = time.perf_counter(), time.process_time()
        try:
            res = solve_sequence(sub, features=f, rtol=args.rtol, on_fail="ignore",
                                 maxiter=args.maxiter, **kw)
        except Exception as exc:  # noqa: BLE001 - a strategy that errors is a result too
            rows.append(dict(recipe=recipe, strategy=label, error=f"{type(exc).__name__}: {exc}"))
            print(f"  {label:<28} ERROR {exc}")
            continue
        total = time.perf_counter() - t
        cpu = time.process_time() - c  # single-threaded: robust to other load on the machine
        per = total / m
        row = dict(recipe=recipe, dofs=n, strategy=label, systems=m, extrapolated=m < len(systems),
                   cpu_per_system_s=cpu / m,
                   total_s=per * len(systems), per_system_s=per, samples_per_s=1.0 / per,
                   mean_iterations=float(np.mean(res.iterations)),
                   failures=int(np.sum(~res.converged)), sort_s=float(res.sort_s),
                   method=res.method, explanation=res.explanation)
        rows.append(row)
        print(f"  {label:<28} {row['per_system_s'] * 1e3:9.1f} ms/system  it {row['mean_iterations']:8.1f}"
              f"  fail {row['failures']:3d}  ({res.method}{f', {m} systems' if m < len(systems) else ''})",
              flush=True)
    return dict(recipe=recipe, dofs=n, systems=len(systems), fixed_matrix=fam.fixed_matrix,
                spd=fam.spd, greedy_sort_s=sort_s, rows=rows, slow_systems=args.slow_systems,
                maxiter=args.maxiter,
                run_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_rec)),
                load_average=[round(load0, 2), round(os.getloadavg()[0], 2)])


def _alternate(strategies: dict, systems, order=None):
    """Solve ``systems`` (in ``order``) with every strategy in turn, system by system.

    Each strategy keeps its own state (hierarchy, factorization, recycle space) across
    its systems; alternating them exposes all to the same machine load, so their ratios
    are fair on a shared machine. Returns ``{label: (wall_s, cpu_s, iterations,
    converged)}``, lists in solve order.
    """
    out = {label: ([], [], [], []) for label in strategies}
    for i in (range(len(systems)) if order is None else order):
        A, b = systems[i]
        for label, st in strategies.items():
            t, c = time.perf_counter(), time.process_time()
            _, stats = st.solve(A, b)
            wall, cpu, its, conv = out[label]
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            its.append(stats.iterations)
            conv.append(bool(stats.converged))
    return out


def interleaved(recipe, args, pairs=(("AMG-CG fresh hierarchy", "amg-cg-fresh"),
                                      ("AMG-CG hierarchy reuse", "amg-cg"))):
    """Fresh and reused AMG-CG on N further systems, alternating (:func:`_alternate`).

    Returns per-strategy median wall and CPU seconds per system (the first system,
    which pays the first setup for both, left out).
    """
    from femno.datagen.sequence import make_strategy

    _, systems, _ = build(recipe, args.interleave, args.seed + 1)
    runs = _alternate({label: make_strategy(m, rtol=args.rtol) for label, m in pairs}, systems)
    out = {}
    for label, (wall, cpu, _, conv) in runs.items():
        if not all(conv):
            raise RuntimeError(f"{label} did not converge in the interleaved run")
        out[label] = dict(median_wall_s=float(np.median(wall[1:])),
                          median_cpu_s=float(np.median(cpu[1:])), systems=len(systems))
        print(f"  interleaved {label:<26} wall {out[label]['median_wall_s'] * 1e3:8.1f} ms  "
              f"cpu {out[label]['median_cpu_s'] * 1e3:8.1f} ms (median of systems 2..{len(systems)})")
    return out


def interleaved_skr(recipe, args):
    """GMRES(40), SKR (GCRO-DR) and, for SPD recipes, SKR (deflated CG) with the same
    preconditioner, alternating (:func:`_alternate`) along the greedy-sorted chain of N
    further systems. Other recipes also take ``ilu0`` (no deflated CG column).

    Returns ``{pc: {label: {mean_wall_s, mean_cpu_s, mean_iterations, failures}}}``.
    """
    from femno.datagen.sequence import make_strategy

    fam, systems, feats = build(recipe, args.interleave_skr, args.seed + 2)
    order, _ = sort_systems(feats, method="greedy")
    out = {}
    allowed = CG_PCS if fam.spd else ("none", "jacobi", "ssor", "ilu0")
    for pc in [p for p in args.pcs if p in allowed]:
        kw = dict(pc=pc, rtol=args.rtol, maxiter=args.maxiter)
        t0, load0 = time.time(), os.getloadavg()[0]
        rivals = {"GMRES(40)": make_strategy("gmres", **kw),
                  "SKR (GCRO-DR)": make_strategy("skr", **kw)}
        if fam.spd:
            rivals["SKR (deflated CG)"] = make_strategy("dcg", **kw)
        runs = _alternate(rivals, systems, order)
        when = dict(run_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
                    load_average=[round(load0, 2), round(os.getloadavg()[0], 2)])
        out[pc] = {k: dict(mean_wall_s=float(np.mean(w)), mean_cpu_s=float(np.mean(c)),
                           mean_iterations=float(np.mean(i)), failures=int(len(v) - sum(v)),
                           systems=len(order), maxiter=args.maxiter, rtol=args.rtol, **when)
                   for k, (w, c, i, v) in runs.items()}
        g = out[pc]["GMRES(40)"]
        print(f"  interleaved {pc:<7}" + "".join(
            f"  {k} {v['mean_cpu_s'] * 1e3:8.1f} ms CPU ({g['mean_cpu_s'] / v['mean_cpu_s']:.2f}x)"
            for k, v in out[pc].items()), flush=True)
    return out


def lockstep(systems, feats, methods: dict, args) -> dict:
    """Run :func:`solve_sequence` once per entry of ``methods`` (label -> kwargs), all on
    the same systems, in lock-step: each run solves one system, then hands over to the
    next (threads taking turns through ``solve_sequence``'s per-system callback).

    Whole-sequence methods (``auto`` with its probe) are compared with single methods
    under the same machine load, system by system. Returns per label the thread CPU
    seconds (``time.thread_time``: only that run's own work), the wall seconds while
    it held the turn, and the method and explanation of the result.
    """
    import threading

    labels = list(methods)
    cond = threading.Condition()
    state = {"turn": 0, "done": set()}
    out = {label: dict(wall_s=0.0, cpu_s=0.0) for label in labels}
    errors = []

    def pass_turn(j):
        with cond:
            nxt = [(j + d) % len(labels) for d in range(1, len(labels) + 1)]
            live = [m for m in nxt if m not in state["done"]]
            state["turn"] = live[0] if live else -1
            cond.notify_all()

    def worker(j, label):
        t_in = [0.0]

        def take_turn():
            with cond:
                cond.wait_for(lambda: state["turn"] == j)
            t_in[0] = time.perf_counter()

        def give_turn():
            out[label]["wall_s"] += time.perf_counter() - t_in[0]
            pass_turn(j)

        def callback(i, x, st):
            give_turn()
            take_turn()

        take_turn()
        c = time.thread_time()
        try:
            res = solve_sequence(systems, features=feats, rtol=args.rtol, on_fail="ignore",
                                 maxiter=args.maxiter, callback=callback, **methods[label])
            out[label].update(method=res.method, explanation=res.explanation,
                              failures=int(np.sum(~res.converged)))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        out[label]["cpu_s"] = time.thread_time() - c
        out[label]["wall_s"] += time.perf_counter() - t_in[0]
        with cond:
            state["done"].add(j)
        pass_turn(j)

    threads = [threading.Thread(target=worker, args=(j, label)) for j, label in enumerate(labels)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def auto_vs_best(rec, args):
    """``auto`` against the best single method of the recorded rows of ``rec`` (lowest
    total time, ``auto`` excluded), run in lock-step (:func:`lockstep`) ``--auto-vs``
    times, alternating which one goes first, on the recipe's ``--systems`` systems."""
    recipe = rec["recipe"]
    fam, systems, feats = build(recipe, args.systems, args.seed)
    kwargs = {label: kw for label, kw, _ in strategies(fam.fixed_matrix, fam.spd, args.pcs)}
    rows = [r for r in rec["rows"] if "total_s" in r and r["strategy"] != "auto"
            and r["strategy"] in kwargs and not r.get("extrapolated")]
    best = min(rows, key=lambda r: r["total_s"])["strategy"]
    t0, load0 = time.time(), os.getloadavg()[0]
    reps = []
    for rep in range(args.auto_vs):
        pair = {"auto": dict(method="auto"), best: kwargs[best]}
        if rep % 2:
            pair = dict(reversed(list(pair.items())))
        reps.append(lockstep(systems, feats, pair, args))
        a, b = reps[-1]["auto"], reps[-1][best]
        print(f"  lock-step {recipe}: auto {a['cpu_s']:.2f} s CPU ({a['method']}) vs {best} "
              f"{b['cpu_s']:.2f} s: ratio {a['cpu_s'] / b['cpu_s']:.3f}", flush=True)
    cpu = {k: [r[k]["cpu_s"] for r in reps] for k in ("auto", best)}
    wall = {k: [r[k]["wall_s"] for r in reps] for k in ("auto", best)}
    return dict(rival=best, systems=len(systems), repeats=args.auto_vs,
                auto_cpu_s=cpu["auto"], rival_cpu_s=cpu[best], auto_wall_s=wall["auto"],
                rival_wall_s=wall[best], auto_method=reps[-1]["auto"]["method"],
                auto_explanation=reps[-1]["auto"]["explanation"],
                run_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
                load_average=[round(load0, 2), round(os.getloadavg()[0], 2)])


def workers_comparison(recipe, args):
    """1 vs 2 workers through the dataset generator (includes assembly and I/O)."""
    import tempfile

    from femno.datagen import generate_dataset

    out = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            s = generate_dataset(recipe, samples=args.systems, out=os.path.join(tmp, "ds"),
                                 method="auto", workers=workers, progress=False)
        out[workers] = dict(total_s=s["total_s"], samples_per_s=s["samples_per_s"],
                            method=s.get("method"), mean_iterations=s.get("mean_iterations"))
        print(f"  generate {recipe} workers={workers}: {s['samples_per_s']:.2f} samples/s ({s.get('method')})")
    return out


def machine() -> dict:
    import platform

    import scipy

    info = dict(python=platform.python_version(), cpus=os.cpu_count(), numpy=np.__version__,
                scipy=scipy.__version__, omp_threads=os.environ.get("OMP_NUM_THREADS"))
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


FINDINGS = ("<!-- findings: kept verbatim by bench_datagen.py -->",
            "<!-- /findings -->")


def merge(results, workers, path):
    """Merge this run into the recorded results: recipes rerun replace their old entry."""
    old = json.loads(path.read_text()) if path.exists() else {}
    recipes = {r["recipe"]: r for r in old.get("recipes", [])}
    recipes.update({r["recipe"]: r for r in results})
    all_workers = dict(old.get("workers") or {})
    all_workers.update(workers)
    return list(recipes.values()), all_workers


def write(results, workers, args):
    args.out.mkdir(parents=True, exist_ok=True)
    m = machine()
    results, workers = merge(results, workers, args.out / "datagen.json")
    (args.out / "datagen.json").write_text(json.dumps(dict(machine=m, rtol=args.rtol, recipes=results,
                                                            workers=workers), indent=1, default=str))
    md = args.out / "datagen.md"
    findings = []
    if md.exists():
        text = md.read_text()
        if FINDINGS[0] in text and FINDINGS[1] in text:
            findings = [text[text.index(FINDINGS[0]):text.index(FINDINGS[1]) + len(FINDINGS[1])], ""]
    L = ["# Data-generation benchmark (femno.datagen.solve_sequence)", "",
         f"Machine: {m.get('cpu_model', '?')}, {m['cpus']} cores, OMP_NUM_THREADS={m['omp_threads']}; "
         f"numpy {m['numpy']}, scipy {m['scipy']}. rtol {args.rtol:g}; iteration limit per system "
         "as each section says.",
         "Command: `python benchmarks/bench_datagen.py --recipes R ...` (all strategies of a recipe on the "
         "same systems, one process; each recipe section says when it ran and the machine's load average).",
         "Times are per system x number of systems; rows marked * ran on the first systems only "
         "(see each section) and are extrapolated.",
         "CPU ms/system = process CPU time per system (every strategy is single-threaded, so this "
         "is robust to other load on a shared machine; older runs did not record it).",
         "'vs GMRES' = time of GMRES(40) with the same preconditioner / time of the row; "
         "'vs best fresh' = best independent per-system solver (LU fresh or AMG-CG fresh) / time of the row.",
         "", *findings]
    for rec in results:
        rows = [r for r in rec["rows"] if "total_s" in r]
        fresh = [r["total_s"] for r in rows if r["strategy"] in ("LU fresh (splu)", "AMG-CG fresh hierarchy")]
        best_fresh = min(fresh) if fresh else float("nan")
        gm = {r["strategy"].split(" + ")[1]: r["total_s"] for r in rows if r["strategy"].startswith("GMRES(40)")}
        L += [f"## {rec['recipe']}: {rec['systems']} systems, {rec['dofs']:,} dofs, "
              f"{'fixed' if rec['fixed_matrix'] else 'changing'} matrix; greedy sort {rec['greedy_sort_s'] * 1e3:.1f} ms", ""]
        if rec.get("run_at"):
            L += [f"_Ran {rec['run_at']}; load average {rec['load_average'][0]} at the start, "
                  f"{rec['load_average'][1]} at the end (2 cores); rows marked * ran on "
                  f"{rec.get('slow_systems')} systems; maxiter {rec.get('maxiter', '?')}._", ""]
        if rec.get("note"):
            L += [f"_{rec['note']}_", ""]
        if rec.get("interleaved"):
            iv = rec["interleaved"]
            (fa, fv), (ra, rv) = list(iv.items())[:2]
            L += [f"Interleaved check ({fv['systems']} further systems, the two strategies alternating "
                  f"system by system, medians): {fa} {fv['median_wall_s'] * 1e3:.0f} ms wall / "
                  f"{fv['median_cpu_s'] * 1e3:.0f} ms CPU per system, {ra} {rv['median_wall_s'] * 1e3:.0f} / "
                  f"{rv['median_cpu_s'] * 1e3:.0f} ms: ratio {fv['median_wall_s'] / rv['median_wall_s']:.2f}x wall, "
                  f"{fv['median_cpu_s'] / rv['median_cpu_s']:.2f}x CPU.", ""]
        if rec.get("interleaved_skr"):
            L += ["Interleaved SKR check (further systems along the sorted chain; GMRES(40), SKR with "
                  "GCRO-DR and SKR with deflated CG alternating system by system, same preconditioner; "
                  "mean CPU ms per system, mean iterations, failures, time ratio GMRES(40) / row):", "",
                  "| pc | systems | GMRES(40) | SKR (GCRO-DR) | SKR (deflated CG) | ran (load avg) |",
                  "|---|---|---|---|---|---|"]
            for pc, v in rec["interleaved_skr"].items():
                g = v["GMRES(40)"]["mean_cpu_s"]
                first = next(iter(v.values()))
                when = (f"{first['run_at']} ({first['load_average'][0]}-{first['load_average'][1]})"
                        if first.get("run_at") else "?")
                if first.get("rtol", 1e-8) != 1e-8:
                    when += f", rtol {first['rtol']:g}"
                cells = []
                for x in v.values():
                    fail = f", {x['failures']} fail" if x.get("failures") else ""
                    cells.append(f"{x['mean_cpu_s'] * 1e3:.1f} ms, {x['mean_iterations']:.0f} it{fail} "
                                 f"({g / x['mean_cpu_s']:.2f}x)")
                cells += ["--"] * (3 - len(cells))  # no deflated CG for non-SPD recipes
                L.append(f"| {pc} | {first['systems']} | " + " | ".join(cells) + f" | {when} |")
            L.append("")
        if rec.get("auto_vs"):
            av = rec["auto_vs"]
            ra = [a / b for a, b in zip(av["auto_cpu_s"], av["rival_cpu_s"], strict=True)]
            L += [f"Lock-step check of `auto` ({av['systems']} systems, {av['repeats']} runs, "
                  f"{av['run_at']}, load average {av['load_average'][0]}-{av['load_average'][1]}): "
                  f"`auto` and the best single method ({av['rival']}) solve the same systems taking "
                  f"turns system by system; CPU s per run auto "
                  f"{', '.join(f'{v:.2f}' for v in av['auto_cpu_s'])} vs "
                  f"{', '.join(f'{v:.2f}' for v in av['rival_cpu_s'])}: auto / best = "
                  f"{np.sum(av['auto_cpu_s']) / np.sum(av['rival_cpu_s']):.3f} (per run "
                  f"{', '.join(f'{v:.3f}' for v in ra)}); auto ran as {av['auto_method']}.", ""]
        L += ["| strategy | total s | samples/s | CPU ms/system | mean it | failures | vs GMRES | vs best fresh | ran as |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in rec["rows"]:
            if "total_s" not in r:
                L.append(f"| {r['strategy']} | {r.get('skipped') or r.get('error')} | | | | | | | |")
                continue
            pc = r["strategy"].split(" + ")[1] if " + " in r["strategy"] else None
            vs_gm = f"{gm[pc] / r['total_s']:.2f}" if pc in gm else ""
            cpu = f"{r['cpu_per_system_s'] * 1e3:.1f}" if "cpu_per_system_s" in r else ""
            L.append(f"| {r['strategy']}{' *' if r['extrapolated'] else ''} | {r['total_s']:.2f} | "
                     f"{r['samples_per_s']:.1f} | {cpu} | {r['mean_iterations']:.1f} | {r['failures']} | {vs_gm} | "
                     f"{best_fresh / r['total_s']:.2f} | {r['method']} |")
        L.append("")
    if workers:
        L += ["## 1 vs 2 workers (`generate_dataset`, assembly + solve + storage)", "",
              "| recipe | workers | samples/s | method |", "|---|---|---|---|"]
        for recipe, w in workers.items():
            for k, v in w.items():
                L.append(f"| {recipe} | {k} | {v['samples_per_s']:.2f} | {v['method']} |")
        L.append("")
    md.write_text("\n".join(L))
    print(f"wrote {md}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["skr-darcy", "skr-thermal", "skr-helmholtz", "skr-poisson"],
                   choices=sorted(RECIPES))
    p.add_argument("--systems", type=int, default=200)
    p.add_argument("--slow-systems", type=int, default=20,
                   help="systems for Krylov rows with weak preconditioners (extrapolated)")
    p.add_argument("--pcs", nargs="+", default=["none", "jacobi", "ssor", "ilu0", "ic", "ilu"],
                   help="preconditioners of the Krylov rows (ilu0 = PETSc-like ILU(0); ic = IC(0), "
                        "SPD recipes only; ilu = scipy threshold ILU)")
    p.add_argument("--rtol", type=float, default=1e-8)
    p.add_argument("--maxiter", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers-recipe", default="skr-darcy", help="recipe for the 1 vs 2 workers run ('' = skip)")
    p.add_argument("--interleave", type=int, default=0, metavar="N",
                   help="also solve N further systems with fresh and reused AMG-CG alternately "
                        "(a load-fair ratio on a shared machine)")
    p.add_argument("--interleave-skr", type=int, default=0, metavar="N",
                   help="also solve N further systems (sorted chain) with GMRES(40), SKR (GCRO-DR) "
                        "and SKR (deflated CG) alternately, per CG preconditioner of --pcs")
    p.add_argument("--auto-vs", type=int, default=0, metavar="R",
                   help="also run auto and the best single method of the recorded rows in "
                        "lock-step, system by system, R times (a load-fair check of auto)")
    p.add_argument("--skip-rows", action="store_true",
                   help="only the interleaved / lock-step runs, keep the recorded rows")
    p.add_argument("--note", default="", help="a remark stored with each recipe run (e.g. 'machine shared')")
    p.add_argument("--all", action="store_true", help="also run strategies skipped as too slow")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if args.skip_rows:
        recorded = json.loads((args.out / "datagen.json").read_text())["recipes"]
        results = [r for r in recorded if r["recipe"] in args.recipes]
    else:
        results = [run_recipe(r, args) for r in args.recipes]
    if args.interleave:
        for r in results:
            if r["spd"]:
                r["interleaved"] = interleaved(r["recipe"], args)
    if args.interleave_skr:
        for r in results:
            # per preconditioner: a rerun replaces only its own rows
            r["interleaved_skr"] = {**r.get("interleaved_skr", {}),
                                    **interleaved_skr(r["recipe"], args)}
    if args.auto_vs:
        for r in results:
            r["auto_vs"] = auto_vs_best(r, args)
    for r in results:
        if args.note:
            r["note"] = args.note
    workers = {args.workers_recipe: workers_comparison(args.workers_recipe, args)} if args.workers_recipe else {}
    write(results, workers, args)


if __name__ == "__main__":
    main()
