"""The cheaper GCRO-DR (issue 23 item 3) computes what it computed before, to rounding.

Recorded iteration counts come from ``femno/solvers/recycle.py`` at fd71b69 (before the
block refresh, the deferred final CholeskyQR pass and the ``M = I`` shortcuts); the
optimised code must reproduce them within one iteration, converge to the true
residual, and keep the recycle space's invariants ``C^T C = I``, ``A M^{-1} U = C``.
Since the Arnoldi step reorthogonalises only where the first Gram-Schmidt pass cancelled
(Kahan-Parlett's criterion; before: always twice) the rounding differs, so the counts
may differ by up to 5 % (measured: 111 vs 107 and 116 on two of the six systems).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from femno.solvers.precond import ILUPreconditioner, make_preconditioner
from femno.solvers.recycle import RecycleSpace, gcrodr
from femno.solvers.recycle_ops import (
    MatrixFingerprint,
    SerialOps,
    matvec_rows,
    orthonormalize_block,
    precond_rows,
    row_norms2,
)


def _convdiff(m, wx, wy, eps=0.02):
    h = 1.0 / (m + 1)
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m)) * (eps / h**2)
    Dp = sp.diags([-1.0, 1.0], [-1, 0], shape=(m, m)) / h
    eye = sp.eye(m)
    return (sp.kron(eye, T) + sp.kron(T, eye) + wx * sp.kron(eye, Dp) + wy * sp.kron(Dp, eye)).tocsr()


def _sequence(reaction):
    """4 matrices with changing wind, then 2 more right-hand sides for the last one."""
    rng = np.random.default_rng(3)
    D = sp.diags(rng.uniform(0, 400, 576)) if reaction else None
    seq = []
    for i in range(4):
        A = _convdiff(24, 1.0 + 0.1 * i, 0.6 - 0.05 * i)
        seq.append(((A + (i + 1) * D).tocsr() if reaction else A, rng.standard_normal(576)))
    return seq + [(seq[-1][0], rng.standard_normal(576)) for _ in range(2)]


#: (preconditioner, reaction term) -> iterations per system of the code before
RECORDED = {("none", False): [103, 102, 115, 110, 107, 116],
            ("jacobi", True): [19, 15, 13, 12, 12, 12]}


@pytest.mark.parametrize("pc, reaction", sorted(RECORDED))
def test_iterations_match_recorded_and_space_stays_valid(pc, reaction):
    space = RecycleSpace()
    its = []
    for A, b in _sequence(reaction):
        M = None if pc == "none" else make_preconditioner(pc).setup(A).apply
        x, info = gcrodr(A, b, M=M, m=20, k=5, rtol=1e-10, recycle=space)
        assert info["reason"] == "rtol"
        assert np.linalg.norm(b - A @ x) <= 1e-10 * np.linalg.norm(b) * (1 + 1e-6)
        its.append(info["iterations"])
        C, U, Z = space.C, space.U, space.Z
        assert C.shape == (576, 5)
        assert np.allclose(C.T @ C, np.eye(5), atol=1e-10)
        assert np.allclose(A @ Z, C, atol=1e-8)
        MU = U if M is None else np.column_stack([M(u) for u in U.T])
        assert np.allclose(MU, Z, atol=1e-10)
    ref = np.array(RECORDED[(pc, reaction)])
    assert np.all(np.abs(np.array(its) - ref) <= np.maximum(1, 0.05 * ref)), its


def test_identity_preconditioner_shares_u_and_z():
    A, b = _sequence(False)[0]
    space = RecycleSpace()
    gcrodr(A, b, m=20, k=5, recycle=space)
    assert space.Zr is space.Ur  # no copy of U kept as M^{-1} U when M = I
    gcrodr(_sequence(False)[1][0], b, m=20, k=5, recycle=space)  # refresh for a new matrix
    assert space.Zr is space.Ur and space.refreshes == 1
    M = make_preconditioner("jacobi").setup(A).apply
    gcrodr(A, b, M=M, m=20, k=5, recycle=space)  # a preconditioner: Z = M^{-1} U stored apart
    assert space.Zr is not space.Ur
    assert np.allclose(np.column_stack([M(u) for u in space.U.T]), space.Z, atol=1e-10)


def test_deferred_final_pass_is_the_eager_one():
    """Reading the space (which settles the deferred pass) after every solve changes nothing."""
    seq = _sequence(False)
    runs = []
    for settle in (False, True):
        space, out = RecycleSpace(), []
        for A, b in seq:
            x, info = gcrodr(A, b, m=20, k=5, rtol=1e-10, recycle=space)
            out.append((x, info["iterations"]))
            if settle:
                assert space._pending is None or space.C is not None
                assert space._pending is None
            else:
                assert space._pending is not None  # serial: the pass waits
        runs.append(out)
    for (x1, i1), (x2, i2) in zip(*runs, strict=True):
        # the same arithmetic up to rounding, which can move a 100+-iteration stop by a
        # few (118 vs 116 seen with another BLAS)
        assert abs(i1 - i2) <= max(1, int(0.02 * i2))
        assert np.linalg.norm(x1 - x2) <= 1e-7 * np.linalg.norm(x2)


def test_block_helpers_equal_the_loops():
    A, _ = _sequence(True)[2]
    X = np.random.default_rng(0).standard_normal((6, 576))
    pc = ILUPreconditioner(drop_tol=1e-3).setup(A)
    ops = SerialOps(A, pc.apply)
    assert ops._block_solve is not None
    assert np.array_equal(precond_rows(ops, X), np.array([pc.apply(x) for x in X]))
    assert np.array_equal(matvec_rows(ops, X), np.array([A @ x for x in X]))
    assert np.allclose(row_norms2(ops, X), np.diag(X @ X.T))
    wrapped = SerialOps(A, lambda r: pc.apply(r))  # an arbitrary callable: the loop
    assert wrapped._block_solve is None
    assert np.array_equal(precond_rows(wrapped, X), precond_rows(ops, X))


def test_orthonormalize_block_keeps_relations():
    A, _ = _sequence(True)[1]
    rng = np.random.default_rng(1)
    U = rng.standard_normal((5, 576)) @ np.diag(np.logspace(0, -6, 576))  # ill-scaled rows
    C = np.array([A @ u for u in U])
    C2, U2 = orthonormalize_block(SerialOps(A), C, U)
    assert np.allclose(C2 @ C2.T, np.eye(len(C2)), atol=1e-12)
    assert np.allclose(np.array([A @ u for u in U2]), C2, atol=1e-9 * np.abs(C2).max())


def test_fingerprint_matches_without_copy_sees_value_changes():
    A = _convdiff(8, 1.0, 0.5)
    key = MatrixFingerprint(A)
    assert key.matches(A) and key.matches(A.copy()) and SerialOps(A).matches(key)
    B = A.copy()
    B.data[3] += 1.0
    assert not key.matches(B) and not SerialOps(B).matches(key)
    A.data[0] *= 2.0  # in place: noticed
    assert not key.matches(A)
    assert not key.matches(sp.eye(64, format="csr")) and not key.matches(np.eye(64))


def test_last_cycle_space_is_formed_only_when_used(monkeypatch):
    """A solve leaves C and Z unformed; a new matrix refreshes from U without forming them,
    the same matrix forms them, and the result equals the space formed eagerly."""
    from femno.solvers import recycle_ritz

    formed = []
    orig_C = recycle_ritz.SpaceUpdate.C
    monkeypatch.setattr(recycle_ritz.SpaceUpdate, "C", lambda self: formed.append(1) or orig_C(self))
    seq = _sequence(True)
    A0, b0 = seq[0]
    M0 = make_preconditioner("jacobi").setup(A0).apply
    space = RecycleSpace()
    gcrodr(A0, b0, M=M0, m=20, k=5, rtol=1e-10, recycle=space)
    assert space._lazy is not None and space._Cr is None
    n_formed = len(formed)
    A1, b1 = seq[1]
    M1 = make_preconditioner("jacobi").setup(A1).apply
    _, info = gcrodr(A1, b1, M=M1, m=20, k=5, rtol=1e-10, recycle=space)  # new matrix: refresh from U
    # C formed for each cycle that follows another, never for the space left by solve 0
    assert space.refreshes == 1 and len(formed) == n_formed + info["cycles"] - 1
    # the pending space, formed on reading, is the eager one: A M^-1 U = A Z = C, C^T C = I
    U, Z, C = space.U, space.Z, space.C
    assert space._lazy is None
    assert np.allclose(np.column_stack([M1(u) for u in U.T]), Z, atol=1e-10)
    assert np.allclose(A1 @ Z, C, atol=1e-8) and np.allclose(C.T @ C, np.eye(5), atol=1e-10)
    # the same matrix again: the pending C is used (no refresh) and recycling helps
    x, info = gcrodr(A1, seq[4][1], M=M1, m=20, k=5, rtol=1e-10, recycle=space)
    assert space.refreshes == 1 and info["reason"] == "rtol"
    assert np.linalg.norm(seq[4][1] - A1 @ x) <= 1e-10 * np.linalg.norm(seq[4][1]) * (1 + 1e-6)


def test_space_update_projection_equals_formed_blocks():
    from femno.solvers import recycle as rc
    from femno.solvers import recycle_ritz

    captured = []
    orig = rc._update_space

    def keep(*a, **kw):
        upd = orig(*a, **kw)
        captured.append(upd)
        return upd

    A, b = _sequence(True)[0]
    M = make_preconditioner("jacobi").setup(A).apply
    rc._update_space = keep
    try:
        gcrodr(A, b, M=M, m=12, k=4, rtol=1e-12, maxiter=30)  # 3 cycles: one with kc = 0, two with kc = 4
    finally:
        rc._update_space = orig
    assert len(captured) >= 2 and all(isinstance(u, recycle_ritz.SpaceUpdate) for u in captured)
    r = np.random.default_rng(5).standard_normal(576)
    for upd in captured[-1:]:  # the last one's blocks are still intact (no later cycle overwrote them)
        U, Z, C = upd.blocks()
        dx, dr = upd.project(r)
        c = C @ r
        assert np.allclose(dx, Z.T @ c, atol=1e-12) and np.allclose(dr, C.T @ c, atol=1e-12)
        assert np.allclose(C @ C.T, np.eye(len(C)), atol=1e-10)
        assert np.allclose(np.array([M(u) for u in U]), Z, atol=1e-10)
        assert np.allclose(np.array([A @ z for z in Z]), C, atol=1e-8)


def test_workspace_is_reused_and_never_aliases_the_stored_space():
    seq = _sequence(False)
    space = RecycleSpace()
    gcrodr(seq[0][0], seq[0][1], m=20, k=5, recycle=space)
    basis = space._work["basis"]
    gcrodr(seq[1][0], seq[1][1], m=20, k=5, recycle=space)
    assert space._work["basis"] is basis  # one allocation for the whole sequence
    for X in (space.Ur, space.Cr, space.Zr):
        assert not np.shares_memory(X, basis)
