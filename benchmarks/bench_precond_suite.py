"""Classical preconditioners for CG on a suite of SPD matrices (GNP-style comparison).

Every method solves ``A x = b`` with preconditioned CG from ``x0 = 0`` to the same
*true* relative residual ``||b - A x|| / ||b|| <= rtol`` (default 1e-8), ``b`` a fixed
seeded standard-normal vector (the assembled load vectors are not used).  The true
residual is recomputed here after every solve; a run that misses ``rtol`` (iteration
cap, breakdown, failed setup) is reported as *not converged*, never as converged.

Matrices (:func:`suite`; ``--scale small`` ~1e4 dofs, ``--scale large`` ~2.5e5 dofs):

* the SPD examples that ship with pyamg (``pyamg.gallery.load_example``): ``airfoil``,
  ``bar`` (3-D elasticity, with its 6 rigid-body modes ``B``), ``knot``,
  ``local_disc_galerkin_diffusion``, ``unit_cube``; fixed sizes (125-966 dofs), so
  only in the small suite.  Left out: ``recirc_flow`` (nonsymmetric), ``helmholtz_2D``
  (complex, indefinite) and ``unit_square`` (singular: pure-Neumann Laplacian);
* ``darcy-unstructured``: femno's Darcy family (log-normal coefficient) on
  :func:`femno.fem.unstructured_square`;
* ``p2-darcy``, ``anisotropic`` (rotated, ratio 1e-3), ``high-contrast`` (8x8 cells,
  conductivity 1 or up to 1e6), ``darcy3d`` (P1 tetrahedra) and ``elasticity2d``
  (P1 vector, with its 3 rigid-body modes): the first system of each builder in
  ``benchmarks/zoo.py``.

Methods (:func:`competitors`): IC(0)-PCG (ilupp), pyamg SA-AMG (near-nullspace modes
given where the matrix has them), pyamg RS-AMG, and through PETSc (only if petsc4py
imports) hypre BoomerAMG and GAMG (both given the modes / block size for elasticity:
GAMG as ``MatSetNearNullSpace``, hypre as nodal coarsening).  All go through
``femno.solvers.krylov("cg", pc=..., backend=...)``.

Adding a method (e.g. a learned preconditioner)
-----------------------------------------------
:func:`competitors` returns a list of ``(name, run)``; append to it::

    def run(case) -> dict:
        # case.A (scipy csr float64), case.b, case.near_nullspace ((n, r) array or None),
        # case.block_size, case.name, case.dofs, case.nnz, case.source
        ...
        return dict(iterations=..., setup=..., solve=..., wall=..., cpu=...,
                    residual=..., converged=...)

    methods = competitors(rtol=1e-8) + [("my-net", run)]
    rows = run_suite(suite("small"), methods)

:func:`timed_krylov` does the timing and the residual check for any solver with
femno's ``solver(A, b) -> x`` / ``solver.stats`` interface (e.g.
``krylov("fcg", pc="neural:model.pt")``).  ``setup`` and ``solve`` are the wall seconds
femno's ``SolveStats`` records (PETSc: plus the csr -> Mat conversion in ``setup``),
``wall`` and ``cpu`` the wall and CPU (``time.process_time``) seconds of the whole call,
``cpu_setup`` the CPU seconds of the preconditioner setup (scipy backend only).
A ``run`` may raise: the row is then recorded as not converged with the error text.

Tables report ``iterations / total CPU seconds (ratio to SA-AMG's total)``; the CPU
time is the whole solver call (one thread), robust to other load on the machine.

Usage::

    python benchmarks/bench_precond_suite.py --scale small
    python benchmarks/bench_precond_suite.py --scale large --repeat 1
    python benchmarks/bench_precond_suite.py --scale small --only darcy-unstructured bar \\
        --skip GAMG

Each run rewrites ``benchmarks/results/precond-suite.{md,json}`` (``--out``), keeping the
results of the other scale found in the JSON file, so the page holds both tables.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

RTOL = 1e-8
#: CG iteration cap of every method (a method that needs more is "not converged")
MAXITER = 5000
#: the reference method of the ratios
REFERENCE = "SA-AMG"
#: 2-D unstructured Darcy: vertices per side minus one, per scale
DARCY_N = {"small": 100, "large": 500}
#: pyamg examples that are SPD (checked: symmetric, smallest eigenvalue > 0)
#: (``unit_square`` is left out: symmetric but singular, a pure-Neumann Laplacian whose
#: smallest eigenvalue is 0 to rounding, so CG breaks down for a generic b)
PYAMG_SPD = ("airfoil", "bar", "knot", "local_disc_galerkin_diffusion", "unit_cube")
#: zoo builders: suite name -> zoo function name
ZOO = {"p2-darcy": "p2_darcy", "anisotropic": "anisotropic", "high-contrast": "high_contrast",
       "darcy3d": "darcy3d", "elasticity2d": "elasticity"}


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- matrices
@dataclass
class Case:
    """One SPD system of the suite."""

    name: str
    A: sp.csr_matrix
    b: np.ndarray
    near_nullspace: np.ndarray | None = None
    block_size: int = 1
    source: str = ""

    @property
    def dofs(self) -> int:
        return int(self.A.shape[0])

    @property
    def nnz(self) -> int:
        return int(self.A.nnz)


def _rhs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n)


def _csr(A) -> sp.csr_matrix:
    A = sp.csr_matrix(A, dtype=np.float64)
    A.sum_duplicates()
    A.sort_indices()
    return A


def _pyamg_case(name: str) -> Case:
    import pyamg

    data = pyamg.gallery.load_example(name)
    A = _csr(data["A"])
    A = _csr(0.5 * (A + A.T))  # local_disc_galerkin_diffusion is symmetric only to 4e-14
    B, bs = None, 1
    if name == "bar":  # 3-D elasticity: 6 rigid-body modes, 3 dofs per node
        B, bs = np.asarray(data["B"], dtype=np.float64), 3
    return Case(name, A, _rhs(A.shape[0]), B, bs, source="pyamg.gallery.load_example")


def _darcy_case(scale: str) -> Case:
    from femno.fem import unstructured_square
    from femno.fem.families import Darcy

    n = DARCY_N[scale]
    fam = Darcy(mesh=unstructured_square(n, seed=0))
    system = fam.assemble(fam.sample(np.random.default_rng(0)))
    A = _csr(system.A)
    return Case("darcy-unstructured", A, _rhs(A.shape[0]),
                source=f"femno Darcy, unstructured_square({n}, seed=0), P1")


def _zoo_case(name: str, scale: str) -> Case:
    import zoo

    build = getattr(zoo, ZOO[name])
    A, _ = build(scale, 1, 0)[0]
    A = _csr(A)
    B, bs = None, 1
    if name == "elasticity2d":
        B, bs = zoo.elasticity_modes(scale)
    return Case(name, A, _rhs(A.shape[0]), B, int(bs),
                source=f"benchmarks/zoo.py {ZOO[name]}({scale!r}, 1, 0)[0]")


def suite_names(scale: str) -> list[str]:
    """The matrix names of a scale, in table order."""
    names = list(PYAMG_SPD) if scale == "small" else []
    return names + ["darcy-unstructured", *ZOO]


def suite(scale: str = "small", only=None) -> list[Case]:
    """Build the matrices of ``scale`` ("small" or "large"), restricted to ``only``."""
    if scale not in DARCY_N:
        raise ValueError(f"scale must be 'small' or 'large', got {scale!r}")
    names = suite_names(scale)
    if only:
        unknown = set(only) - set(names)
        if unknown:
            raise ValueError(f"unknown matrices {sorted(unknown)} for scale {scale!r}; "
                             f"valid: {', '.join(names)}")
        names = [n for n in names if n in set(only)]
    cases = []
    for name in names:
        if name in PYAMG_SPD:
            cases.append(_pyamg_case(name))
        elif name == "darcy-unstructured":
            cases.append(_darcy_case(scale))
        else:
            cases.append(_zoo_case(name, scale))
    return cases


# --------------------------------------------------------------------------- methods
def timed_krylov(make_solver, case: Case, *, rtol: float = RTOL) -> dict:
    """Run ``make_solver(case)(case.A, case.b)`` once; times, iterations, true residual."""
    from femno.solvers.factory import KrylovSolver

    solver = make_solver(case)
    cpu_setup = [None]
    if isinstance(solver, KrylovSolver):  # CPU time of the preconditioner setup
        pc, orig = solver.pc, solver.pc.setup

        def setup(A, _orig=orig):
            t = time.process_time()
            try:
                return _orig(A)
            finally:
                cpu_setup[0] = time.process_time() - t

        pc.setup = setup
    w0, c0 = time.perf_counter(), time.process_time()
    x = solver(case.A, case.b)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    st = solver.stats
    bnorm = float(np.linalg.norm(case.b))
    residual = float(np.linalg.norm(case.b - case.A @ x)) / bnorm
    setup = float(st.setup_s) + float(getattr(solver, "convert_s", 0.0) or 0.0)
    return dict(iterations=int(st.iterations), setup=setup, solve=float(st.solve_s),
                wall=wall, cpu=cpu, cpu_setup=cpu_setup[0], residual=residual,
                converged=bool(np.isfinite(residual) and residual <= rtol),
                reason=str(st.reason))


def _krylov_run(pc: str, *, backend: str = "scipy", modes: bool = True,
                rtol: float = RTOL, maxiter: int = MAXITER, pc_options=None):
    from femno.solvers import krylov

    def make(case):
        kw = {}
        if modes and case.near_nullspace is not None:
            kw = dict(near_nullspace=case.near_nullspace, block_size=case.block_size)
        if pc_options:
            kw["pc_options"] = pc_options
        return krylov("cg", pc=pc, rtol=rtol, maxiter=maxiter, backend=backend,
                      on_fail="ignore", **kw)

    def run(case):
        return timed_krylov(make, case, rtol=rtol)

    return run


def competitors(*, rtol: float = RTOL, maxiter: int = MAXITER, skip=(), model=None) -> list:
    """The classical methods as ``[(name, run)]``, ``run(case) -> dict`` (see module doc).

    Methods whose dependency is missing are left out (:data:`MISSING` says why).
    ``model``: a learned smoothed-aggregation model (``femno train precond --kind amg``)
    adds the row "learned SA" (``krylov("cg", pc="neural:MODEL")``); its ablation, the
    same hierarchy with SA's classical damping, is the SA-AMG row (femno's ``amg-sa``
    stores pyamg's levels as CSR, like the learned hierarchy).
    """
    MISSING.clear()
    out = []
    if have("ilupp"):
        out.append(("IC(0)", _krylov_run("ic", rtol=rtol, maxiter=maxiter)))
    else:
        MISSING["IC(0)"] = "ilupp is not installed"
    out.append(("SA-AMG", _krylov_run("amg-sa", rtol=rtol, maxiter=maxiter)))
    out.append(("RS-AMG", _krylov_run("amg-rs", rtol=rtol, maxiter=maxiter)))
    if have("petsc4py"):
        out.append(("BoomerAMG", _krylov_run("hypre", backend="petsc", rtol=rtol,
                                             maxiter=maxiter)))
        out.append(("GAMG", _krylov_run("gamg", backend="petsc", rtol=rtol,
                                        maxiter=maxiter)))
    else:
        MISSING["BoomerAMG"] = MISSING["GAMG"] = "petsc4py does not import"
    if model is not None:
        theta = _tuned_theta(model)
        if theta is not None:  # a learned strength: its classical rival, the tuned threshold
            METHOD_NOTES["SA tuned theta"] = (
                f"krylov('cg', pc='amg-sa') with pyamg's symmetric strength at theta = "
                f"{theta:g}, the threshold the learned model's training found best (no "
                "network)")
            out.append(("SA tuned theta", _krylov_run(
                "amg-sa", rtol=rtol, maxiter=maxiter,
                pc_options={"strength": ("symmetric", {"theta": theta})})))
        out.append(("learned SA", _krylov_run(f"neural:{model}", rtol=rtol, maxiter=maxiter)))
    return [(n, r) for n, r in out if n not in set(skip)]


def _tuned_theta(model):
    """``meta["strength"]["theta_tuned"]`` of a learned-strength model, else None."""
    from femno.operators.checkpoint import load_model

    m = load_model(model)
    if getattr(m, "strength_head", None) is None:
        return None
    return float((m.meta or {}).get("strength", {}).get("theta_tuned", 0.0))


#: method name -> why it is not in :func:`competitors` on this machine
MISSING: dict = {}

METHOD_NOTES = {
    "IC(0)": "krylov('cg', pc='ic'): ilupp IC(0)",
    "SA-AMG": "krylov('cg', pc='amg-sa'): pyamg smoothed aggregation V-cycle, near-nullspace B "
              "where the matrix has modes",
    "RS-AMG": "krylov('cg', pc='amg-rs'): pyamg Ruge-Stuben V-cycle",
    "BoomerAMG": "krylov('cg', pc='hypre', backend='petsc'): PETSc CG + hypre BoomerAMG "
                 "(nodal coarsening by block size where the matrix has modes)",
    "GAMG": "krylov('cg', pc='gamg', backend='petsc'): PETSc CG + GAMG (MatSetNearNullSpace "
            "where the matrix has modes)",
    "learned SA": "krylov('cg', pc='neural:MODEL') with a LearnedSA model (--model; "
                  "femno.operators.precond_amg, trained on 2-D Darcy only): SA with the "
                  "prolongation damping set per row by a graph network, near-nullspace B "
                  "where the matrix has modes; its ablation is the SA-AMG column",
}


def _median_rows(rounds: list[dict]) -> dict:
    out = dict(rounds[-1])
    for key in ("setup", "solve", "wall", "cpu", "cpu_setup"):
        vals = [r[key] for r in rounds if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    out["converged"] = all(r["converged"] for r in rounds)
    out["residual"] = max(r["residual"] for r in rounds)
    out["rounds"] = len(rounds)
    return out


def warm_up(methods):
    """Run each method once on a small Poisson matrix (imports, PETSc/hypre start-up)."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30))
    A = _csr(sp.kron(T, sp.eye(30)) + sp.kron(sp.eye(30), T))
    case = Case("warm-up", A, _rhs(A.shape[0]))
    for _, run in methods:
        try:
            run(case)
        except Exception:  # noqa: BLE001, S110 - the timed run reports the error
            pass


def run_suite(cases, methods, *, repeat: int = 1, rtol: float = RTOL, log=print,
              warm: bool = True) -> list[dict]:
    """Run every method on every case (``repeat`` rounds, medians); one row per pair.

    ``warm``: first run each method once, untimed, on a small matrix (:func:`warm_up`).
    """
    if warm:
        warm_up(methods)
    rows = []
    for case in cases:
        for name, run in methods:
            rounds = []
            for _ in range(max(1, int(repeat))):
                try:
                    r = dict(run(case))
                except Exception as exc:  # noqa: BLE001 - a failed setup is a result too
                    r = dict(iterations=0, setup=None, solve=None, wall=None, cpu=None,
                             cpu_setup=None, residual=float("nan"), converged=False,
                             reason=f"error: {type(exc).__name__}: {exc}"[:300])
                r["converged"] = bool(r.get("converged")) and bool(
                    np.isfinite(r["residual"]) and r["residual"] <= rtol)
                rounds.append(r)
            row = {"matrix": case.name, "method": name, "dofs": case.dofs, "nnz": case.nnz,
                   **_median_rows(rounds)}
            rows.append(row)
            if log:
                cpu = "-" if row["cpu"] is None else f"{row['cpu']:.3f}"
                log(f"{case.name:30s} {name:10s} its {row['iterations']:5d}  cpu {cpu:>8s} s  "
                    f"res {row['residual']:.2e}  {'ok' if row['converged'] else 'NOT CONVERGED'}"
                    f"  ({row.get('reason', '')})", flush=True)
    _add_ratios(rows)
    return rows


def _add_ratios(rows):
    ref = {r["matrix"]: r for r in rows if r["method"] == REFERENCE and r["converged"]}
    for r in rows:
        s = ref.get(r["matrix"])
        ok = s is not None and r["converged"] and r["cpu"] is not None and s["cpu"]
        r["ratio_total"] = r["cpu"] / s["cpu"] if ok else None
        r["ratio_iterations"] = r["iterations"] / s["iterations"] if ok and s["iterations"] \
            else None
        r["ratio_wall"] = r["wall"] / s["wall"] if ok and s["wall"] else None


# --------------------------------------------------------------------------- report
def machine() -> dict:
    import pyamg
    import scipy

    from femno import __version__

    info = {"platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "pyamg": pyamg.__version__,
            "femno": __version__, "threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if have("petsc4py"):
        import petsc4py
        from petsc4py import PETSc

        info["petsc4py"] = petsc4py.__version__
        info["petsc"] = ".".join(map(str, PETSc.Sys.getVersion()))
    if have("ilupp"):
        import importlib.metadata as md

        try:
            info["ilupp"] = md.version("ilupp")
        except md.PackageNotFoundError:
            info["ilupp"] = "?"
    return info


def _s(seconds) -> str:
    """Seconds: 4 decimals below 0.01 s, 3 below 10 s, else 1."""
    return f"{seconds:.4f}" if seconds < 0.01 else f"{seconds:.3f}" if seconds < 10 \
        else f"{seconds:.1f}"


def _cell(r) -> str:
    if r is None:
        return "-"
    if not r["converged"]:
        reason = r.get("reason", "")
        why = "error" if reason.startswith("error") else f"{r['iterations']} its"
        return f"n.c. ({why}, res {r['residual']:.1e})"
    ratio = "" if r["ratio_total"] is None else f" ({r['ratio_total']:.2f}x)"
    return f"{r['iterations']} / {_s(r['cpu'])}{ratio}"


def _table(entry) -> list[str]:
    rows = entry["results"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| matrix | dofs | nnz | " + " | ".join(methods) + " |",
             "|---|---:|---:|" + "---:|" * len(methods)]
    for case in entry["cases"]:
        by = {r["method"]: r for r in rows if r["matrix"] == case["name"]}
        lines.append(f"| {case['name']} | {case['dofs']} | {case['nnz']} | "
                     + " | ".join(_cell(by.get(m)) for m in methods) + " |")
    return lines


def _split_table(entry) -> list[str]:
    rows = entry["results"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| matrix | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]

    def cell(r):
        if r is None or r["setup"] is None:
            return "-"
        return f"{_s(r['setup'])} + {_s(r['solve'])}"

    for case in entry["cases"]:
        by = {r["method"]: r for r in rows if r["matrix"] == case["name"]}
        lines.append(f"| {case['name']} | " + " | ".join(cell(by.get(m)) for m in methods)
                     + " |")
    return lines


def reading(entry) -> list[str]:
    """Plain statements derived from the numbers of one scale."""
    rows = entry["results"]
    out = []
    wins_t, wins_i = {}, {}
    for case in entry["cases"]:
        ok = [r for r in rows if r["matrix"] == case["name"] and r["converged"]]
        if not ok:
            out.append(f"* {case['name']}: no method converged.")
            continue
        bt = min(ok, key=lambda r: r["cpu"])
        wins_t.setdefault(bt["method"], []).append(case["name"])
        least = min(r["iterations"] for r in ok)  # ties: every method with the fewest
        for r in ok:
            if r["iterations"] == least:
                wins_i.setdefault(r["method"], []).append(case["name"])
    for m, names in sorted(wins_t.items(), key=lambda kv: -len(kv[1])):
        out.append(f"* Fastest total CPU time: **{m}** on {len(names)} of "
                   f"{len(entry['cases'])} matrices ({', '.join(names)}).")
    for m, names in sorted(wins_i.items(), key=lambda kv: -len(kv[1])):
        out.append(f"* Fewest iterations (ties counted for each): **{m}** on {len(names)} "
                   f"({', '.join(names)}).")
    gm = []
    for m in dict.fromkeys(r["method"] for r in rows):
        ratios = [r["ratio_total"] for r in rows if r["method"] == m and r["ratio_total"]]
        if m != REFERENCE and ratios:
            gm.append(f"{m} {float(np.exp(np.mean(np.log(ratios)))):.2f}x ({len(ratios)})")
    if gm:
        out.append(f"* Geometric mean of the total-CPU ratio to {REFERENCE} (number of matrices "
                   "where both converged): " + ", ".join(gm) + ".")
    tiny = [c["name"] for c in entry["cases"] if c["dofs"] < 2000]
    if tiny:
        worst = max((r["cpu"] for r in rows if r["matrix"] in tiny and r["cpu"] is not None),
                    default=0.0)
        out.append(f"* On the {len(tiny)} matrices below 2000 dofs every total is at most "
                   f"{1e3 * worst:.0f} ms: those rows measure setup overhead more than "
                   "convergence.")
    failed = [f"{r['method']} on {r['matrix']}" for r in rows if not r["converged"]]
    if failed:
        out.append("* Not converged to rtol: " + "; ".join(failed) + ".")
    return out


def write_report(doc: dict, out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    m = doc["machine"]
    lines = [
        "# Preconditioned CG on an SPD matrix suite (classical AMG, IC(0) and learned SA)", "",
        f"Date: {doc['date']}.  Machine: {m.get('cpu_model', m['processor'])}, "
        f"{m['cpus']} CPUs, {m['platform']}; one thread (OMP_NUM_THREADS={m['threads']}); "
        f"python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, pyamg {m['pyamg']}, "
        f"PETSc {m.get('petsc', 'n/a')} (petsc4py {m.get('petsc4py', 'n/a')}), "
        f"ilupp {m.get('ilupp', 'n/a')}, femno {m['femno']}.", "",
        f"Every method: CG from x0 = 0 to the true relative residual "
        f"||b - Ax|| / ||b|| <= {doc['rtol']:g} (recomputed after the solve), "
        f"b = seeded N(0, 1) vector, at most {doc['maxiter']} iterations.  "
        "Cells: `iterations / total CPU s (ratio to SA-AMG's total)`; total = CPU time "
        "(`time.process_time`) of the whole solver call (setup + solve; PETSc rows "
        "include the csr -> Mat conversion).  n.c. = did not reach rtol.  pyamg gallery "
        "examples left out: recirc_flow (nonsymmetric), helmholtz_2D (complex, indefinite), "
        "unit_square (singular pure-Neumann Laplacian: every method broke down).", "",
        "Methods:", "",
    ]
    lines += [f"* **{k}**: {v}" for k, v in METHOD_NOTES.items()]
    for k, v in doc.get("missing", {}).items():
        lines.append(f"* {k}: skipped, {v}")
    lines.append("")
    for scale in ("small", "large"):
        entry = doc["scales"].get(scale)
        if not entry:
            continue
        lines += [f"## {scale}", "", f"Command: `{entry['command']}` "
                  f"(median of {entry['repeat']} round(s); suite built in "
                  f"{entry['build_s']:.1f} s, benchmark {entry['run_s']:.1f} s wall).", ""]
        if entry.get("note"):
            lines += [entry["note"], ""]
        lines += _table(entry)
        lines += ["", "Wall seconds, setup + solve (femno's `SolveStats`):", ""]
        lines += _split_table(entry)
        lines += ["", "Matrices:", ""]
        lines += [f"* {c['name']}: {c['source']}" + (f"; near-nullspace {c['modes']} modes, "
                  f"block size {c['block_size']}" if c["modes"] else "")
                  for c in entry["cases"]]
        lines += ["", "### Reading", ""] + reading(entry) + [""]
    out.with_suffix(".md").write_text("\n".join(lines))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description="Run IC(0), pyamg SA/RS-AMG and PETSc BoomerAMG/GAMG preconditioned CG on "
        "a suite of SPD matrices (pyamg gallery examples, femno Darcy on an unstructured "
        "mesh, P2 Darcy, anisotropic, high-contrast, 3-D Darcy, 2-D elasticity) to the same "
        "true relative residual, one thread, and write a markdown/JSON report with "
        "iterations, setup/solve/total seconds and ratios to SA-AMG.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scale", choices=("small", "large"), default="small",
                   help="small: ~1e4 dofs per matrix plus the fixed-size pyamg examples; "
                   "large: ~2.5e5 dofs per matrix (no pyamg examples)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these matrices (names: "
                   + ", ".join(dict.fromkeys(suite_names("small") + suite_names("large")))
                   + ")")
    p.add_argument("--skip", nargs="+", metavar="METHOD", default=[],
                   help="leave out these methods (IC(0), SA-AMG, RS-AMG, BoomerAMG, GAMG)")
    p.add_argument("--out", default=str(HERE / "results" / "precond-suite"),
                   help="output path without suffix: writes PATH.md and PATH.json (results "
                   "of the other scale already in PATH.json are kept)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds per (matrix, method); times are medians over the rounds")
    p.add_argument("--rtol", type=float, default=RTOL, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, metavar="MODEL",
                   help="add a learned-SA row (femno train precond --kind amg --out MODEL)")
    p.add_argument("--maxiter", type=int, default=MAXITER,
                   help="CG iteration cap of every method")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    cases = suite(args.scale, args.only)
    build_s = time.perf_counter() - t0
    print(f"built {len(cases)} matrices in {build_s:.1f} s", flush=True)
    methods = competitors(rtol=args.rtol, maxiter=args.maxiter, skip=args.skip,
                          model=args.model)
    for k, v in MISSING.items():
        print(f"skipping {k}: {v}", flush=True)
    t1 = time.perf_counter()
    rows = run_suite(cases, methods, repeat=args.repeat, rtol=args.rtol)
    run_s = time.perf_counter() - t1

    out = Path(args.out)
    doc = {}
    if out.with_suffix(".json").exists():
        try:
            doc = json.loads(out.with_suffix(".json").read_text())
        except (OSError, ValueError):
            doc = {}
    doc.update(date=datetime.date.today().isoformat(), machine=machine(), rtol=args.rtol,
               maxiter=args.maxiter, missing=dict(MISSING))
    doc.setdefault("scales", {})
    argv_s = sys.argv[1:] if argv is None else list(argv)
    doc["scales"][args.scale] = {
        "command": "python benchmarks/bench_precond_suite.py " + shlex.join(argv_s),
        "repeat": args.repeat, "build_s": build_s, "run_s": run_s,
        "cases": [{"name": c.name, "dofs": c.dofs, "nnz": c.nnz, "source": c.source,
                   "modes": 0 if c.near_nullspace is None else int(c.near_nullspace.shape[1]),
                   "block_size": c.block_size} for c in cases],
        "results": rows,
    }
    write_report(doc, out)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return doc


if __name__ == "__main__":
    main()
