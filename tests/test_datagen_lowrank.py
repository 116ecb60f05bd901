"""Block solves of fixed-matrix sequences whose right-hand sides span a low-dimensional space."""

import numpy as np
import scipy.sparse as sp

from femno.datagen import solve_sequence
from femno.datagen.strategy import LUStrategy, range_basis


def _poisson_matrix(n=30):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    return sp.csr_matrix(sp.kronsum(T, T))


def test_range_basis_rank_and_projection():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 40))
    Q = range_basis(B)
    assert Q.shape == (500, 3)
    assert np.allclose(Q.T @ Q, np.eye(3), atol=1e-12)
    assert np.linalg.norm(B - Q @ (Q.T @ B)) <= 1e-12 * np.linalg.norm(B)
    assert range_basis(B[:, :3]) is None  # too few columns to gain anything


def test_lowrank_block_solves_meet_tolerance_and_use_few_solves():
    A = _poisson_matrix()
    rng = np.random.default_rng(0)
    B = rng.standard_normal((A.shape[0], 2)) @ rng.standard_normal((2, 24))
    lu = LUStrategy(rtol=1e-10)
    X, _, _, res = lu.solve_block(A, B)
    assert lu.last_rank == 2
    assert np.all(res <= 1e-10)
    assert np.allclose(X, np.linalg.solve(A.toarray(), B), rtol=1e-9, atol=1e-12)


def test_column_outside_the_range_is_corrected():
    """A right-hand side that the low-rank basis misses is still solved to tolerance."""
    A = _poisson_matrix()
    rng = np.random.default_rng(2)
    B = rng.standard_normal((A.shape[0], 2)) @ rng.standard_normal((2, 24))
    B[:, 5] = 1e-9 * rng.standard_normal(A.shape[0])  # tiny and off the 2-D range
    lu = LUStrategy(rtol=1e-10)
    X, _, _, res = lu.solve_block(A, B)
    assert np.all(res <= 1e-10)
    ref = np.linalg.solve(A.toarray(), B[:, 5])
    assert np.linalg.norm(X[:, 5] - ref) <= 1e-8 * np.linalg.norm(ref)


def test_auto_on_fixed_matrix_lifted_family_reports_rank():
    """Poisson with fixed matrix and linear data: auto solves a basis of the rhs space."""
    A = _poisson_matrix(20)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((A.shape[0], 3))
    systems = [(A, base @ rng.uniform(-1, 1, 3)) for _ in range(20)]
    res = solve_sequence(systems, method="auto")
    assert res.method == "auto->block"
    assert "3-dimensional space" in res.explanation
    for (Ai, bi), x in zip(systems, res.solutions, strict=True):
        assert np.linalg.norm(bi - Ai @ x) <= 1e-8 * np.linalg.norm(bi)
