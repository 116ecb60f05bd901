"""Sparse direct factorizations with symbolic reuse (femno.solvers.factor): every backend
agrees with SuperLU, reuses its analysis for one pattern, redoes it when the fill grows,
and falls back when CHOLMOD meets an indefinite matrix."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import femno.solvers.factor as factor
from femno.errors import InputError, MissingDependencyError
from femno.solvers.factor import available_backends, sparse_factor

HAVE = available_backends()
LIBS = [b for b in ("cholmod", "mumps") if HAVE[b]]


def _laplacian(m):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    return sp.csr_matrix(sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T))


def _family(kind, m=24, N=4, seed=0):
    rng = np.random.default_rng(seed)
    L = _laplacian(m)
    n = L.shape[0]
    Dx = sp.kron(sp.eye(m), sp.diags([-1.0, 1.0], [-1, 0], shape=(m, m)))
    out = []
    for _ in range(N):
        a = sp.diags(np.sqrt(1.0 + rng.random(n)))
        A = a @ L @ a
        if kind == "nonsymmetric":
            A = A + (0.5 + 2 * rng.random()) * Dx
        elif kind == "indefinite":
            A = A - 0.4 * sp.eye(n)
        A = sp.csr_matrix(A)
        A.sort_indices()
        out.append(A)
    return out


CASES = [(b, k) for b in ("superlu", *LIBS) for k in ("spd", "nonsymmetric", "indefinite")
         if not (b == "cholmod" and k == "nonsymmetric")]


@pytest.mark.parametrize("backend,kind", CASES)
def test_backend_matches_superlu_and_reuses_analysis(backend, kind):
    As = _family(kind)
    sym = kind != "nonsymmetric"
    f = sparse_factor(backend=backend, symmetric=sym, positive_definite=kind == "spd")
    rng = np.random.default_rng(1)
    for A in As:
        B = rng.standard_normal((A.shape[0], 3))
        f.factorize(A)
        X = f.solve(B)
        Xref = spla.splu(A.tocsc()).solve(B)
        assert np.linalg.norm(X - Xref) <= 1e-9 * np.linalg.norm(Xref)
        x = f.solve(B[:, 0])
        assert x.shape == (A.shape[0],) and np.allclose(x, X[:, 0], rtol=1e-12, atol=0)
    assert f.n_factorizations == len(As)
    if backend == "superlu":
        assert f.n_analyses == len(As)  # SuperLU cannot reuse one
    elif backend == "cholmod" and kind == "indefinite":
        # small matrices get CHOLMOD's simplicial LDL^T (fine without pivots), large ones
        # its supernodal LL^T, which refuses and hands over to the fallback
        assert f.backend == "cholmod" or "not positive definite" in f.history[0]
    else:
        assert f.n_analyses == 1 and f.backend == backend


@pytest.mark.skipif(not HAVE["mumps"], reason="PETSc with MUMPS not installed")
def test_mumps_fill_growth_triggers_a_new_analysis(monkeypatch):
    """A factor that grows past FILL_GROWTH x the first one gets its analysis redone."""
    monkeypatch.setattr(factor, "FILL_GROWTH", 0.5)  # every refactorization 'grew'
    As = _family("nonsymmetric", N=3)
    f = sparse_factor(backend="mumps")
    for A in As:
        f.factorize(A)
        b = np.ones(A.shape[0])
        assert np.linalg.norm(A @ f.solve(b) - b) <= 1e-10 * np.linalg.norm(b)
    assert f.fill_reanalyses == 2 and f.n_analyses == 3
    assert f.factor_nnz() > As[0].nnz


@pytest.mark.skipif(not HAVE["cholmod"], reason="scikit-sparse not installed")
def test_cholmod_supernodal_refuses_indefinite_and_falls_back():
    A = sp.csr_matrix(_laplacian(120) - 0.05 * sp.eye(120 ** 2))  # supernodal size
    f = sparse_factor(backend="cholmod", symmetric=True, positive_definite=True)
    f.factorize(A)
    b = np.ones(A.shape[0])
    assert f.backend == f.fallback and "not positive definite" in f.history[0]
    assert np.linalg.norm(A @ f.solve(b) - b) <= 1e-8 * np.linalg.norm(b)


def test_a_new_pattern_gets_a_new_analysis():
    f = sparse_factor(backend=LIBS[-1] if LIBS else "superlu", symmetric=True,
                      positive_definite=True)
    for m in (10, 12, 10):
        A = _laplacian(m)
        f.factorize(A)
        b = np.ones(A.shape[0])
        assert np.allclose(A @ f.solve(b), b)
    assert f.n_analyses == 3


def test_singular_matrix_is_a_clear_error():
    A = sp.csr_matrix(np.diag([1.0, 0.0, 2.0]))
    for backend in ("superlu", *[b for b in LIBS if b != "cholmod"]):
        f = sparse_factor(backend=backend)
        with pytest.raises(InputError, match="singular"):
            f.factorize(A)
            x = f.solve(np.ones(3))
            assert np.all(np.isfinite(x))  # not reached: MUMPS must have said so


def test_bad_backend_and_cholmod_on_nonsymmetric():
    with pytest.raises(InputError, match="unknown direct backend 'x'"):
        sparse_factor(backend="x")
    with pytest.raises(InputError, match="symmetric positive definite"):
        sparse_factor(backend="cholmod", symmetric=False)


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sksparse", None)
    monkeypatch.setattr(factor, "_have", lambda m: m != "sksparse" and factor.importlib.util
                        .find_spec(m) is not None)
    assert not available_backends()["cholmod"]
    with pytest.raises(MissingDependencyError, match=r"femno\[direct\]"):
        sparse_factor(backend="cholmod", symmetric=True, positive_definite=True)
    # auto silently uses what is there
    f = sparse_factor(backend="auto", symmetric=True, positive_definite=True)
    assert f.backend in ("mumps", "superlu")
