"""GCRO-DR recycling on PETSc matrices, serial or distributed under MPI.

Design: *the same algorithm code* as the numpy solver
(:func:`femno.solvers.recycle.gcrodr_core`), run on each rank's owned rows with a
:class:`PetscOps` object:

* vectors and blocks are local numpy arrays of the owned rows (PETSc's layout of
  ``A``, :func:`~femno.solvers.petsc_backend.ownership_range`);
* ``matvec`` is ``Mat.mult`` on two work ``Vec`` s, ``precond`` a PETSc ``PC``
  (``jacobi``, ``sor``, ``ilu`` -> ``bjacobi`` in parallel, ``gamg``, ... or any
  ``PETSc.PC``);
* every inner product, norm and small Gram matrix is *one* reduction over the
  communicator: ``mpi4py``'s ``Allreduce`` when mpi4py is importable, otherwise a
  PETSc ``VecScatter`` to all ranks followed by a local sum in rank order (mpi4py
  is not a dependency). Both give bitwise identical results on every rank, so the
  small dense linear algebra (Givens, harmonic Ritz) runs redundantly and the
  control flow stays in lock-step.

The recycle space (:class:`~femno.solvers.recycle.RecycleSpace`) then holds the
owned rows of ``U``, ``Z = M^{-1} U`` and ``C``; pass the same object to the next
:func:`gcrodr_petsc` call (on the same communicator and layout).

HPDDM
-----
PETSc's own GCRO-DR (``-ksp_type hpddm -ksp_hpddm_type gcrodr``, used by the SKR
paper) needs PETSc configured with HPDDM. The Debian PETSc 3.18 build that femno
is tested with does **not** include it: ``PETSc.KSP.Type.HPDDM`` exists as a name,
but ``ksp.setType("hpddm")`` fails with "Unable to find requested KSP type".
:func:`hpddm_available` reports this without raising; femno's GCRO-DR here works
with any PETSc.

>>> hpddm_available() in (True, False)
True
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import scipy.sparse as sp

from femno.errors import InputError
from femno.solvers.base import report_nonconvergence
from femno.solvers.recycle import RecycleSpace, gcrodr_core
from femno.solvers.stats import SolveStats

__all__ = ["hpddm_available", "PetscOps", "gcrodr_petsc", "PetscGCRODR", "main"]


def hpddm_available() -> bool:
    """True when the installed PETSc can create a KSP of type ``hpddm``.

    False without petsc4py or with a PETSc built without HPDDM (Debian's 3.18).
    """
    try:
        from femno.solvers.petsc_backend import get_petsc

        PETSc = get_petsc()
    except Exception:  # MissingDependencyError or a broken install
        return False
    if not hasattr(PETSc.KSP.Type, "HPDDM"):
        return False
    ksp = PETSc.KSP().create(comm=PETSc.COMM_SELF)
    try:
        ksp.setType("hpddm")
        return True
    except Exception:  # PETSc.Error: unknown type
        return False
    finally:
        ksp.destroy()


class _Reducer:
    """Global sum of small float64 arrays over a PETSc communicator (one collective)."""

    def __init__(self, comm):
        self.comm = comm
        self.size = comm.getSize()
        self.mpi = None
        self._cache = {}
        if self.size > 1:
            try:
                self.mpi = comm.tompi4py()
            except Exception:  # mpi4py not installed: use a PETSc scatter
                self.mpi = None

    def __call__(self, a):
        a = np.ascontiguousarray(a, dtype=np.float64)
        if self.size == 1 or a.size == 0:
            return a
        if self.mpi is not None:
            from mpi4py import MPI

            out = np.empty_like(a)
            self.mpi.Allreduce(a, out, op=MPI.SUM)
            return out
        from femno.solvers.petsc_backend import get_petsc

        PETSc = get_petsc()
        p = a.size
        if p not in self._cache:
            src = PETSc.Vec().createMPI((p, PETSc.DECIDE), comm=self.comm)
            scatter, out = PETSc.Scatter.toAll(src)
            self._cache[p] = (src, scatter, out)
        src, scatter, out = self._cache[p]
        src.setArray(a.ravel())
        scatter.scatter(src, out, addv=PETSc.InsertMode.INSERT_VALUES,
                        mode=PETSc.ScatterMode.FORWARD)
        gathered = out.getArray(readonly=True).reshape(self.size, p)
        return gathered.sum(axis=0).reshape(a.shape)

    def destroy(self):
        for objs in self._cache.values():
            for o in objs:
                o.destroy()
        self._cache.clear()


class _PetscFingerprint:
    """Local CSR arrays and state of a PETSc matrix (compared by :meth:`PetscOps.matches`).

    Holds no communicator or reducer: the matrix it was taken from may be destroyed
    by the time it is compared.
    """

    def __init__(self, A):
        self.ref = A
        self.state = A.stateGet()
        indptr, indices, data = A.getValuesCSR()
        self.arrays = (A.getSizes(), indptr.copy(), indices.copy(), data.copy())

    def same_locally(self, other) -> bool:
        if self.ref is other.ref and self.state == other.state:
            return True
        return self.arrays[0] == other.arrays[0] and all(
            np.array_equal(a, b) for a, b in zip(self.arrays[1:], other.arrays[1:], strict=True))


class PetscOps:
    """Ops (see :mod:`femno.solvers.recycle_ops`) for a PETSc ``Mat`` and optional ``PC``.

    Vectors are the local arrays of the rows this rank owns.
    """

    def __init__(self, A, pc=None):
        self.A, self.pc = A, pc
        self.comm = A.getComm()
        self.n = int(A.getSize()[0])
        self._x, self._y = A.createVecs()
        self.reduce = _Reducer(self.comm)

    def matvec(self, v):
        self._x.setArray(v)
        self.A.mult(self._x, self._y)
        return np.array(self._y.getArray(readonly=True), dtype=np.float64)

    def precond(self, v):
        if self.pc is None:
            return np.array(v, dtype=np.float64)
        self._x.setArray(v)
        self.pc.apply(self._x, self._y)
        return np.array(self._y.getArray(readonly=True), dtype=np.float64)

    def dots(self, X, v):
        return self.reduce(X @ v)

    def gram(self, X, Y):
        return self.reduce(X @ Y.T)

    def norm(self, v):
        return float(math.sqrt(max(float(self.reduce(np.array([v @ v]))[0]), 0.0)))

    def fingerprint(self):
        return _PetscFingerprint(self.A)

    def matches(self, key) -> bool:
        """Same matrix on every rank (one reduction, so all ranks agree)."""
        same = isinstance(key, _PetscFingerprint) and key.same_locally(self.fingerprint())
        return float(self.reduce(np.array([0.0 if same else 1.0]))[0]) == 0.0

    def destroy(self):
        self._x.destroy()
        self._y.destroy()
        self.reduce.destroy()


def make_pc(A, pc="none"):
    """A set-up ``PETSc.PC`` for ``A`` from a femno/PETSc name (``None`` for ``"none"``).

    ``"ilu"``/``"ic"`` become block Jacobi with ILU(0)/ICC(0) blocks on more than one
    rank (PETSc has no parallel ILU); ``"petsc:<type>"`` passes any PETSc type.
    """
    from femno.solvers.petsc_backend import PCS, get_petsc

    PETSc = get_petsc()
    if not isinstance(pc, str):
        return pc  # a PETSc.PC (assumed set up for A) or None
    name = pc.lower()
    if name == "none":
        return None
    if name.startswith("petsc:"):
        ptype = name.split(":", 1)[1]
    elif name in PCS and PCS[name] not in ("lu", "cholesky"):
        ptype = PCS[name]
    else:
        raise InputError(f"preconditioner {pc!r} is not available for gcrodr on PETSc")
    obj = PETSc.PC().create(comm=A.getComm())
    obj.setOperators(A)
    if A.getComm().getSize() > 1 and ptype in ("ilu", "icc"):
        obj.setType("bjacobi")
        obj.setUp()
        for sub in obj.getBJacobiSubKSP():
            sub.setType("preonly")
            sub.getPC().setType(ptype)
    else:
        obj.setType(ptype)
    obj.setUp()
    return obj


def gcrodr_petsc(A, b, *, x0=None, pc="none", rtol=1e-8, atol=0.0, maxiter=None,
                 callback=None, m=40, k=20, recycle=None):
    """GCRO-DR(m, k) for a PETSc ``Mat`` / ``Vec`` (any communicator).

    The method, options and ``info`` are those of :func:`femno.solvers.recycle.gcrodr`
    (right preconditioning ``A M^{-1}``, true residual monitored); only the data
    live in PETSc and every reduction is global. ``callback(x_local)`` gets this
    rank's rows of the iterate.

    Parameters
    ----------
    A : PETSc.Mat
    b : PETSc.Vec
    x0 : PETSc.Vec, optional
    pc : str or PETSc.PC
        Name (``"none"``, ``"jacobi"``, ``"sor"``, ``"ilu"``, ``"gamg"``,
        ``"petsc:<type>"``) or a ``PC`` already set up for ``A``.
    recycle : RecycleSpace, optional
        Carried space (owned rows), updated in place.

    Returns
    -------
    x : PETSc.Vec
    info : dict

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("petsc4py")
    >>> import numpy as np, scipy.sparse as sp
    >>> from femno.solvers.petsc_backend import to_petsc_mat, to_petsc_vec
    >>> A = sp.diags([-1.3, 2.0, -0.7], [-1, 0, 1], shape=(100, 100), format="csr")
    >>> x, info = gcrodr_petsc(to_petsc_mat(A), to_petsc_vec(np.ones(100)), m=20, k=5)
    >>> info["reason"], bool(np.linalg.norm(A @ x.getArray() - 1) < 1e-7)
    ('rtol', True)
    """
    pcobj = make_pc(A, pc)
    ops = PetscOps(A, pcobj)
    try:
        bl = np.array(b.getArray(readonly=True), dtype=np.float64)
        x0l = None if x0 is None else np.array(x0.getArray(readonly=True), dtype=np.float64)
        xl, info = gcrodr_core(ops, bl, x0=x0l, rtol=rtol, atol=atol, maxiter=maxiter,
                               callback=callback, m=m, k=k, recycle=recycle, M=pcobj)
        r = bl - ops.matvec(xl)
        info["true_residual"] = ops.norm(r) / (ops.norm(bl) or 1.0)
    finally:
        ops.destroy()
        if isinstance(pc, str) and pcobj is not None:
            pcobj.destroy()
    x = b.duplicate()
    x.setArray(xl)
    return x, info


class PetscGCRODR:
    """``krylov("gcrodr", backend="petsc", ...)``: GCRO-DR on PETSc with femno's solver API.

    ``solver(A, b, x0=None)`` takes a scipy matrix and numpy vector (converted on
    ``comm``; in parallel each rank passes the replicated global system and keeps its
    rows) or a PETSc ``Mat``/``Vec``; returns a numpy array (the full vector on every
    rank) for numpy input, a ``Vec`` for ``Vec`` input. ``recycle=True`` keeps the
    recycle space across calls (:meth:`reset_recycle` clears it). Statistics in
    ``solver.stats`` (``backend="petsc"``).
    """

    def __init__(self, *, pc="none", rtol=1e-8, atol=0.0, maxiter=None, restart=40, k=20,
                 recycle=False, on_fail="raise", comm=None):
        if not isinstance(pc, str):
            raise InputError("backend='petsc' gcrodr takes the preconditioner by name")
        self.pc_name = pc.lower()
        self.rtol, self.atol, self.maxiter = rtol, atol, maxiter
        self.restart, self.k, self.recycle, self.on_fail = int(restart), int(k), recycle, on_fail
        self.comm = comm
        self.stats = None
        self.history = []
        self.info = {}
        self.recycle_space = RecycleSpace()

    def reset_recycle(self):
        self.recycle_space = RecycleSpace()

    def __call__(self, A, b, x0=None, **ignored):
        from femno.solvers.petsc_backend import (
            from_petsc_vec,
            get_petsc,
            to_petsc_mat,
            to_petsc_vec,
        )

        PETSc = get_petsc()
        comm = PETSc.COMM_SELF if self.comm is None else self.comm
        par = comm.getSize() > 1
        own = []
        if sp.issparse(A) or isinstance(A, np.ndarray):
            A = to_petsc_mat(sp.csr_matrix(A), comm, global_rows=par)
            own.append(A)
        numpy_out = not isinstance(b, PETSc.Vec)
        if numpy_out:
            b = to_petsc_vec(np.asarray(b, dtype=np.float64), comm, global_rows=par)
            own.append(b)
        if x0 is not None and not isinstance(x0, PETSc.Vec):
            x0 = to_petsc_vec(np.asarray(x0, dtype=np.float64), comm, global_rows=par)
            own.append(x0)
        t = time.perf_counter()
        space = self.recycle_space if self.recycle else None
        x, info = gcrodr_petsc(A, b, x0=x0, pc=self.pc_name, rtol=self.rtol, atol=self.atol,
                               maxiter=self.maxiter, m=self.restart, k=self.k, recycle=space)
        solve_s = time.perf_counter() - t
        self.info = info
        residual = info["true_residual"]
        converged = bool(residual <= self.rtol or residual * b.norm() <= self.atol)
        reason = info["reason"] if converged or info["reason"] != "rtol" else "rtol not met by true residual"
        self.stats = SolveStats(
            method="gcrodr", pc=self.pc_name, backend="petsc", n=int(b.getSize()),
            rtol=self.rtol, iterations=info["iterations"], residuals=list(info["residuals"]),
            residual=residual, residual_kind="true", converged=converged, setup_s=0.0,
            solve_s=solve_s, reason=reason)
        self.history.append(self.stats)
        out = from_petsc_vec(x) if numpy_out else x
        if numpy_out:
            x.destroy()
        for o in own:
            o.destroy()
        if not converged:
            msg = (f"gcrodr (PETSc) with preconditioner {self.pc_name!r} did not converge: "
                   f"{info['iterations']} iterations, relative residual {residual:.3e} "
                   f"(reason: {reason})")
            report_nonconvergence(msg, on_fail=self.on_fail, stats=self.stats, x=out)
        return out


def main(argv=None) -> int:
    """``mpiexec -n P python -m femno.solvers.recycle_petsc FAMILY --seeds 0 1 ...``.

    Every rank assembles the same (replicated) systems of the family (see
    :mod:`femno.solvers.petsc_mpi`), keeps its rows, and solves them in order with
    :func:`gcrodr_petsc` and one carried recycle space; rank 0 saves the solutions
    (``--out``, ``.npy`` of shape ``(len(seeds), n)``) and prints one JSON line.
    """
    p = argparse.ArgumentParser(prog="python -m femno.solvers.recycle_petsc")
    p.add_argument("family")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--pc", default="none")
    p.add_argument("--rtol", type=float, default=1e-8)
    p.add_argument("--m", type=int, default=40)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from femno.solvers.petsc_backend import (
        from_petsc_vec,
        get_petsc,
        ownership_range,
        to_petsc_mat,
        to_petsc_vec,
    )
    from femno.solvers.petsc_mpi import build_system

    PETSc = get_petsc()
    comm = PETSc.COMM_WORLD
    space, sols, its = RecycleSpace(), [], []
    for seed in args.seeds:
        A, b = build_system(args.family, n=args.n, seed=seed)
        rs, re = ownership_range(A.shape[0], comm)
        Am, bv = to_petsc_mat(A[rs:re], comm), to_petsc_vec(b[rs:re], comm)
        x, info = gcrodr_petsc(Am, bv, pc=args.pc, rtol=args.rtol, m=args.m, k=args.k,
                               recycle=space)
        its.append(info["iterations"])
        sols.append(from_petsc_vec(x, root=0))
        for o in (Am, bv, x):
            o.destroy()
    if comm.getRank() == 0:
        if args.out:
            np.save(args.out, np.array(sols))
        print(json.dumps({"ranks": comm.getSize(), "iterations": its, "n": int(A.shape[0]),
                          "reason": info["reason"], "residual": info["true_residual"]}))
    return 0


if __name__ == "__main__":  # pragma: no cover - run under mpiexec by the tests
    sys.exit(main())
