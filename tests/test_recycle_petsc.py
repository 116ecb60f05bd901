"""GCRO-DR on PETSc matrices: serial, factory backend, and distributed under mpiexec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from femno.solvers.precond import make_preconditioner
from femno.solvers.recycle import RecycleSpace, gcrodr

ROOT = Path(__file__).resolve().parents[1]


def _darcy(n, seed):
    from femno.fem import get_family

    fam = get_family("darcy", n=n)
    s = fam.assemble(fam.sample(np.random.default_rng(seed)))
    return sp.csr_matrix(s.A), np.asarray(s.b, dtype=np.float64)


def _serial_sequence(n, seeds, pc, m, k, rtol):
    space, xs, its = RecycleSpace(), [], []
    for seed in seeds:
        A, b = _darcy(n, seed)
        M = None if pc == "none" else make_preconditioner(pc).setup(A).apply
        x, info = gcrodr(A, b, M=M, m=m, k=k, recycle=space, rtol=rtol)
        xs.append(x)
        its.append(info["iterations"])
    return xs, its


@pytest.mark.petsc
def test_hpddm_reported_cleanly():
    from femno.solvers.petsc_backend import get_petsc
    from femno.solvers.recycle_petsc import hpddm_available

    avail = hpddm_available()
    assert isinstance(avail, bool)
    PETSc = get_petsc()
    ksp = PETSc.KSP().create(comm=PETSc.COMM_SELF)
    try:
        ksp.setType("hpddm")
        direct = True
    except PETSc.Error:
        direct = False
    finally:
        ksp.destroy()
    assert avail == direct  # False on Debian's PETSc 3.18 (no HPDDM)


@pytest.mark.petsc
@pytest.mark.parametrize("pc", ["none", "jacobi"])
def test_gcrodr_petsc_serial_equals_numpy(pc):
    from femno.solvers.petsc_backend import to_petsc_mat, to_petsc_vec
    from femno.solvers.recycle_petsc import gcrodr_petsc

    xs, its = _serial_sequence(16, [0, 1], pc, 20, 6, 1e-10)
    space = RecycleSpace()
    for seed, xref, it in zip([0, 1], xs, its, strict=True):
        A, b = _darcy(16, seed)
        x, info = gcrodr_petsc(to_petsc_mat(A), to_petsc_vec(b), pc=pc, m=20, k=6,
                               recycle=space, rtol=1e-10)
        assert info["reason"] == "rtol" and info["iterations"] == it
        assert np.linalg.norm(x.getArray() - xref) <= 1e-10 * np.linalg.norm(xref)
        assert info["true_residual"] <= 1.01e-10


@pytest.mark.petsc
def test_factory_petsc_backend_recycles():
    from femno.errors import ConvergenceError
    from femno.solvers import krylov

    solver = krylov("gcrodr", backend="petsc", pc="ilu", recycle=True, restart=30, k=8)
    for seed in (0, 1):
        A, b = _darcy(16, seed)
        x = solver(A, b)
        assert solver.stats.converged and solver.stats.backend == "petsc"
        assert np.linalg.norm(b - A @ x) <= 1.01e-8 * np.linalg.norm(b)
    assert solver.recycle_space.k == 8 and solver.recycle_space.refreshes == 1
    with pytest.raises(ConvergenceError):
        krylov("gcrodr", backend="petsc", restart=10, k=4, maxiter=5)(A, b)


@pytest.mark.petsc
@pytest.mark.mpi
@pytest.mark.parametrize("pc", ["none", "jacobi"])
def test_gcrodr_mpiexec_equals_serial(tmp_path, pc):
    exe = shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec not found")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "sols.npy"
    seeds = [0, 1, 2]
    cmd = [exe, "-n", "2", "--oversubscribe", sys.executable, "-m", "femno.solvers.recycle_petsc",
           "darcy", "--n", "20", "--seeds", *map(str, seeds), "--pc", pc, "--rtol", "1e-11",
           "--m", "25", "--k", "8", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout
    info = json.loads(lines[0])
    xs, its = _serial_sequence(20, seeds, pc, 25, 8, 1e-11)
    assert info["ranks"] == 2 and info["reason"] == "rtol"
    assert all(abs(a - b) <= 1 for a, b in zip(info["iterations"], its, strict=True)), (info, its)
    dist = np.load(out)
    for x, xref in zip(dist, xs, strict=True):
        assert np.linalg.norm(x - xref) <= 1e-8 * np.linalg.norm(xref)
