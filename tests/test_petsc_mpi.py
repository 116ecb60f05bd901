"""MPI tests of the PETSc backend: ``mpiexec -n 2 python -m femno.solvers.petsc_mpi``.

``darcy_family`` below is a tiny stand-in family (finite-volume Darcy on a grid, pure
scipy) so that the MPI path is tested even without femno.fem; the test with the real
``darcy`` family of femno.fem is skipped while that family is not available.
"""

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
import scipy.sparse.linalg as spla

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


class _System:
    def __init__(self, A, b):
        self.A, self.b, self.dofs = A, b, A.shape[0]


class _GridDarcy:
    """-div(k grad u) = 1 on an n x n cell grid, log-normal k, u = 0 outside."""

    def __init__(self, n):
        self.n = n

    def sample(self, rng):
        return np.exp(rng.standard_normal((self.n + 2, self.n + 2)))

    def assemble(self, k):
        m = self.n
        idx = np.arange(m * m).reshape(m, m)
        ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        rows, cols, vals = [idx.ravel()], [idx.ravel()], []
        diag = np.zeros((m, m))
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            kc, kn = k[1:-1, 1:-1], k[1 + di : m + 1 + di, 1 + dj : m + 1 + dj]
            t = 2 * kc * kn / (kc + kn)
            diag += t
            ni, nj = ii + di, jj + dj
            inside = (ni >= 0) & (ni < m) & (nj >= 0) & (nj < m)
            rows.append(idx[ii[inside], jj[inside]])
            cols.append(idx[ni[inside], nj[inside]])
            vals.append(-t[inside])
        vals.insert(0, diag.ravel())
        A = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m,) * 2
        )
        return _System(A, np.full(m * m, 1.0 / m**2))


def darcy_family(n):
    """Family factory used as ``test_petsc_mpi:darcy_family``."""
    return _GridDarcy(n)


def _mpiexec(args, tmp_path, nproc=2):
    exe = shutil.which("mpiexec")
    if exe is None:
        pytest.skip("mpiexec not found")
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    out = tmp_path / "sol.npy"
    cmd = [
        exe,
        "-n",
        str(nproc),
        "--oversubscribe",
        sys.executable,
        "-m",
        "femno.solvers.petsc_mpi",
        *args,
        "--out",
        str(out),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout  # only rank 0 prints
    return json.loads(lines[0]), np.load(out)


@pytest.mark.petsc
@pytest.mark.mpi
@pytest.mark.parametrize("pc", ["gamg", "hypre", "ilu"])
def test_mpiexec_matches_serial_standin(tmp_path, pc):
    from femno.solvers.petsc_mpi import build_system

    n, seed = 48, 3
    A, b = build_system("test_petsc_mpi:darcy_family", n=n, seed=seed)
    xref = spla.spsolve(A.tocsc(), b)
    method = "gmres" if pc == "ilu" else "cg"
    info, x = _mpiexec(
        [
            "test_petsc_mpi:darcy_family",
            "--n",
            str(n),
            "--seed",
            str(seed),
            "--method",
            method,
            "--pc",
            pc,
            "--rtol",
            "1e-12",
        ],
        tmp_path,
    )
    assert info["ranks"] == 2 and info["dofs"] == n * n and info["converged"]
    assert info["iterations"] > 0 and info["setup_s"] > 0 and info["solve_s"] > 0
    assert np.linalg.norm(x - xref) / np.linalg.norm(xref) < 1e-8


@pytest.mark.petsc
@pytest.mark.mpi
def test_mpiexec_darcy_matches_serial(tmp_path):
    fem = pytest.importorskip("femno.fem")
    if not hasattr(fem, "get_family"):
        pytest.skip("femno.fem.get_family not available yet")
    try:
        fem.get_family("darcy", n=8)
    except Exception as exc:  # the family itself is missing
        pytest.skip(f"darcy family not available: {exc}")
    from femno.solvers.petsc_backend import PetscKrylov
    from femno.solvers.petsc_mpi import build_system

    A, b = build_system("darcy", n=32, seed=0)
    x_serial = PetscKrylov("cg", pc="gamg", rtol=1e-12)(A, b)
    xref = spla.spsolve(A.tocsc(), b)
    assert np.linalg.norm(x_serial - xref) / np.linalg.norm(xref) < 1e-8
    info, x = _mpiexec(
        ["darcy", "--n", "32", "--seed", "0", "--method", "cg", "--pc", "gamg", "--rtol", "1e-12"],
        tmp_path,
    )
    assert info["ranks"] == 2 and info["dofs"] == A.shape[0] and info["converged"]
    assert np.linalg.norm(x - xref) / np.linalg.norm(xref) < 1e-8


@pytest.mark.petsc
def test_solve_distributed_single_rank():
    from femno.solvers.petsc_mpi import build_system, main, solve_distributed

    A, b = build_system("test_petsc_mpi:darcy_family", n=20, seed=1)
    x, solver = solve_distributed(A, b, method="cg", pc="gamg", rtol=1e-12)
    xref = spla.spsolve(A.tocsc(), b)
    assert np.linalg.norm(x - xref) / np.linalg.norm(xref) < 1e-8
    assert solver.stats.converged and solver.stats.backend == "petsc"
    assert main(["no_such_module_xyz:family", "--n", "4"]) == 2
