"""Solve one member of a parametric problem family with PETSc under MPI.

Run as::

    mpiexec -n 2 python -m femno.solvers.petsc_mpi darcy --n 64 --seed 0 \\
        --method cg --pc gamg --rtol 1e-10 --out sol.npy --json

What happens on each rank:

1. the family ``get_family(name, n=n)`` is built and the parameter sample drawn with
   ``numpy.random.default_rng(seed)``, so every rank gets the *same* system;
2. **assembly is replicated**: every rank assembles the whole global system
   ``(A, b)`` with scikit-fem and then keeps only its own rows
   ``A[rstart:rend]``, ``b[rstart:rend]`` (PETSc's default contiguous layout,
   :func:`~femno.solvers.petsc_backend.ownership_range`), which it inserts into a
   distributed ``mpiaij`` matrix.  Memory and assembly time therefore do not scale
   with the number of ranks; only the linear solve is distributed.  Truly distributed
   assembly (each rank assembling its own mesh partition) is a later step;
3. the system is solved with :class:`~femno.solvers.petsc_backend.PetscKrylov` on
   ``PETSc.COMM_WORLD``;
4. the solution is gathered on rank 0 (``VecScatterCreateToZero``), which writes it
   (``--out``, ``.npy``) and prints a summary (one JSON object with ``--json``:
   ``family, n, seed, dofs, ranks, method, pc, iterations, residual, converged,
   reason, setup_s, solve_s, assemble_s``).

``name`` is a family registered in :mod:`femno.fem` or ``"package.module:factory"``
for a custom family factory called as ``factory(n=n)`` (an object with
``sample(rng)`` and ``assemble(params)`` returning something with ``A``, ``b``).

Exit status: 0 converged, 1 not converged, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import numpy as np

from femno.errors import ConvergenceError, FemnoError, InputError

__all__ = ["load_family", "build_system", "solve_distributed", "main"]


def load_family(name: str, *, n: int):
    """Return the family ``name`` (a femno family or ``"module:factory"``) of size ``n``."""
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"cannot load family factory {name!r}: {exc}") from exc
        return factory(n=n)
    from femno.fem import get_family  # the FE core; imported only when needed

    return get_family(name, n=n)


def build_system(name: str, *, n: int, seed: int):
    """Assemble the (replicated) global system of family ``name`` for ``seed``.

    Returns
    -------
    A : scipy.sparse.csr_matrix
    b : ndarray
    """
    fam = load_family(name, n=n)
    system = fam.assemble(fam.sample(np.random.default_rng(seed)))
    import scipy.sparse as sp

    return sp.csr_matrix(system.A, dtype=np.float64), np.asarray(system.b, dtype=np.float64)


def solve_distributed(
    A,
    b,
    *,
    method="cg",
    pc="gamg",
    rtol=1e-10,
    atol=0.0,
    maxiter=None,
    petsc_options=None,
    comm=None,
):
    """Distribute the replicated global system row-wise and solve it with PETSc.

    Every rank passes the same ``A`` (scipy CSR) and ``b``; each inserts only its
    own row block into an ``mpiaij`` matrix.

    Returns
    -------
    x : ndarray or None
        The solution on rank 0, ``None`` on the other ranks.
    solver : PetscKrylov
        The solver (``solver.stats`` holds the statistics; identical on every rank).
    """
    from femno.solvers.petsc_backend import (
        PetscKrylov,
        from_petsc_vec,
        get_petsc,
        ownership_range,
        to_petsc_mat,
        to_petsc_vec,
    )

    PETSc = get_petsc()
    comm = PETSc.COMM_WORLD if comm is None else comm
    N = A.shape[0]
    rstart, rend = ownership_range(N, comm)
    Amat = to_petsc_mat(A[rstart:rend], comm)  # own rows, global column indices
    bvec = to_petsc_vec(b[rstart:rend], comm)
    solver = PetscKrylov(
        method,
        pc=pc,
        rtol=rtol,
        atol=atol,
        maxiter=maxiter,
        on_fail="ignore",
        petsc_options=petsc_options,
        comm=comm,
    )
    solver(Amat, bvec)
    # the KSP keeps its solution vector: gather it on rank 0 only
    x = from_petsc_vec(solver.ksp.getSolution(), root=0)
    Amat.destroy()
    bvec.destroy()
    return x, solver


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m femno.solvers.petsc_mpi",
        description="Solve one family member with PETSc (run under mpiexec).",
    )
    p.add_argument("family", help="family name (femno.fem) or 'module:factory'")
    p.add_argument("--n", type=int, default=64, help="mesh resolution (default 64)")
    p.add_argument("--seed", type=int, default=0, help="parameter sample seed (default 0)")
    p.add_argument("--method", default="cg", help="Krylov method (default cg)")
    p.add_argument("--pc", default="gamg", help="preconditioner (default gamg)")
    p.add_argument("--rtol", type=float, default=1e-10)
    p.add_argument("--atol", type=float, default=0.0)
    p.add_argument("--maxiter", type=int, default=None)
    p.add_argument(
        "--petsc-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra PETSc option (repeatable), e.g. pc_gamg_threshold=0.05",
    )
    p.add_argument("--out", default=None, help="write the solution (.npy) on rank 0")
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        from femno.solvers.petsc_backend import get_petsc

        PETSc = get_petsc()
        comm = PETSc.COMM_WORLD
        rank, size = comm.getRank(), comm.getSize()
        opts = {}
        for item in args.petsc_option:
            name, sep, value = item.partition("=")
            opts[name] = value if sep else None
        t = time.perf_counter()
        A, b = build_system(args.family, n=args.n, seed=args.seed)
        assemble_s = time.perf_counter() - t
        x, solver = solve_distributed(
            A,
            b,
            method=args.method,
            pc=args.pc,
            rtol=args.rtol,
            atol=args.atol,
            maxiter=args.maxiter,
            petsc_options=opts,
            comm=comm,
        )
    except FemnoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    st = solver.stats
    if rank == 0:
        if args.out:
            np.save(args.out, x)
        summary = {
            "family": args.family,
            "n": args.n,
            "seed": args.seed,
            "dofs": int(A.shape[0]),
            "ranks": size,
            "method": st.method,
            "pc": st.pc,
            "iterations": st.iterations,
            "residual": st.residual,
            "converged": st.converged,
            "reason": st.reason,
            "petsc_reason": solver.petsc_reason,
            "setup_s": st.setup_s,
            "solve_s": st.solve_s,
            "assemble_s": assemble_s,
        }
        if args.json:
            print(json.dumps(summary), flush=True)
        else:
            print(
                f"{args.family} n={args.n} seed={args.seed} dofs={A.shape[0]} ranks={size}: "
                + st.summary(),
                flush=True,
            )
        if not st.converged:
            print(
                f"warning: {ConvergenceError.__name__}: KSP_{solver.petsc_reason}", file=sys.stderr
            )
    return 0 if st.converged else 1


if __name__ == "__main__":  # pragma: no cover - exercised through mpiexec in the tests
    sys.exit(main())
