r"""Backward against forward of the differentiable solve (femno.hybrid.linear_solve).

Issue 18, item 1: the backward is one adjoint solve :math:`A^{\mathsf T}\lambda = g` that
reuses the forward's work. Per row (matrix at ~65k dofs, one process, medians of
``--repeats``): seconds of the forward (matrix values new each time, so it pays the
numeric factorization / AMG set-up and the solve) and of the backward (adjoint solve and
the gradient on the pattern), and backward / forward. Targets: <= 1.5 with AMG, <= 0.3
with a reused factorization.

* ``darcy`` (SPD, P1, 257^2 grid -> 65,025 free dofs): direct with the auto backend
  (CHOLMOD), SuperLU, MUMPS; CG + pyamg SA (the backward reuses solver and hierarchy);
* ``convdiff`` (nonsymmetric, the zoo's convdiff-mild at 59,536 dofs): SuperLU and MUMPS
  (transposed solves with the same factor); GMRES + ILU (the backward needs a second
  ILU, of :math:`A^{\mathsf T}`: set up in the first backward, kept afterwards).

Writes ``benchmarks/results/hybrid.{json,md}``::

    OMP_NUM_THREADS=1 python benchmarks/bench_hybrid.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from femno.fem import Darcy  # noqa: E402
from femno.hybrid import AdjointSolver, TorchAssembler, csr_tensor, linear_solve  # noqa: E402


def darcy(n):
    fam = Darcy(n=n)
    asm = TorchAssembler.from_family(fam)
    rng = np.random.default_rng(0)
    params = [fam.sample(rng) for _ in range(8)]
    b = torch.tensor(fam.assemble(params[0]).b)
    mats = []
    for p in params:  # the solve alone: leaf values (the assembly is timed apart)
        A = asm.scipy([p["a"]])
        mats.append(lambda A=A: csr_tensor(A.indptr, A.indices,
                                           torch.tensor(A.data, requires_grad=True), A.shape))
    return mats, b, asm, params


def assembly_times(asm, params, repeats):
    """Seconds of the differentiable assembly's forward and backward (one random weight)."""
    fw, bw = [], []
    w = torch.tensor(np.random.default_rng(1).standard_normal(asm.nnz))
    for i in range(repeats + 1):
        a = torch.tensor(params[i % len(params)]["a"], requires_grad=True)
        t = time.perf_counter()
        v = asm.values([a])
        t1 = time.perf_counter()
        (v * w).sum().backward()
        if i:
            fw.append(t1 - t), bw.append(time.perf_counter() - t1)
    return float(np.median(fw)), float(np.median(bw))


def convdiff():
    import bench_recycle as br

    systems = br.systems_for("convdiff-mild", "mid", 8)
    mats = []
    for A, _ in systems:
        A = A.tocsr()
        A.sort_indices()
        mats.append(lambda A=A: csr_tensor(A.indptr, A.indices,
                                           torch.tensor(A.data, requires_grad=True), A.shape))
    return mats, torch.tensor(systems[0][1])


def measure(make_matrices, b, method, repeats, **kw):
    solver = AdjointSolver(method, **kw)
    fw, bw = [], []
    for i in range(repeats + 1):  # the first call warms up libraries and is not counted
        A = make_matrices[i % len(make_matrices)]()
        t = time.perf_counter()
        x = linear_solve(A, b, solver=solver)
        t1 = time.perf_counter()
        (x * x).sum().backward()
        t2 = time.perf_counter()
        if i:
            fw.append(t1 - t), bw.append(t2 - t1)
    f, g = float(np.median(fw)), float(np.median(bw))
    backend = getattr(getattr(solver, "_factor", None), "backend", None)
    return {"forward_s": f, "backward_s": g, "ratio": g / f, "backend": backend}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256, help="Darcy cells per side (256: 65k dofs)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args(argv)
    rows = []
    mats, b, asm, params = darcy(a.n)
    asm_f, asm_b = assembly_times(asm, params, a.repeats)
    print(f"assembly forward {asm_f:.4f} s, backward {asm_b:.4f} s", flush=True)
    for label, method, kw, target in (
            ("direct (auto)", "direct", {}, 0.3), ("direct superlu", "direct", {"backend": "superlu"}, 0.3),
            ("direct mumps", "direct", {"backend": "mumps"}, 0.3),
            ("cg+amg", "cg", {"pc": "amg", "rtol": 1e-8}, 1.5)):
        r = measure(mats, b, method, a.repeats, **kw)
        rows.append({"matrix": "darcy", "n": int(b.shape[0]), "solver": label, "target": target, **r})
        print(json.dumps(rows[-1]), flush=True)
    mats, b = convdiff()
    for label, method, kw, target in (
            ("direct superlu", "direct", {"backend": "superlu"}, 0.3),
            ("direct mumps", "direct", {"backend": "mumps"}, 0.3),
            ("gmres+ilu", "gmres", {"pc": "ilu", "rtol": 1e-8, "restart": 40}, 1.5)):
        r = measure(mats, b, method, a.repeats, **kw)
        rows.append({"matrix": "convdiff", "n": int(b.shape[0]), "solver": label, "target": target, **r})
        print(json.dumps(rows[-1]), flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "hybrid.json").write_text(json.dumps({"machine": machine, "rows": rows,
                                                   "assembly_forward_s": asm_f,
                                                   "assembly_backward_s": asm_b}, indent=1))
    lines = ["# Differentiable solve: backward against forward", "",
             f"`python benchmarks/bench_hybrid.py` on {machine}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Medians of {a.repeats} "
             "calls, new matrix values each call (forward = numeric factorization or AMG "
             "set-up + solve; backward = adjoint solve + gradient on the pattern). Krylov "
             "rows at rtol 1e-8.", "",
             "| matrix | dofs | solver | backend | forward s | backward s | backward / forward | target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "met" if r["ratio"] <= r["target"] else "**missed**"
        lines.append(f"| {r['matrix']} | {r['n']:,} | {r['solver']} | {r['backend'] or '-'} | "
                     f"{r['forward_s']:.3f} | {r['backward_s']:.3f} | {r['ratio']:.2f} | "
                     f"<= {r['target']} ({ok}) |")
    lines += ["", f"Differentiable assembly of the Darcy matrix (TorchAssembler, same mesh): "
              f"forward {asm_f * 1e3:.1f} ms, backward {asm_b * 1e3:.1f} ms (not in the rows "
              "above: their matrix values are leaf tensors)."]
    (a.out / "hybrid.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out / 'hybrid.md'}")


if __name__ == "__main__":
    main()
