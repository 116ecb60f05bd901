"""``auto``'s probe: probed systems are kept (never solved twice), a probe solve that
cannot win is stopped by its budget, and every solution meets rtol."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import femno.datagen.auto as auto
from femno.datagen import solve_sequence
from femno.datagen.strategy import KrylovStrategy, LUStrategy

RTOL = 1e-10


def _laplacian(m):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    return sp.csr_matrix(sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T))


def _sequence(N, *, shift=0.0, m=20, seed=0):
    """SPD (shift 0) or symmetric indefinite (shift inside the spectrum, positive
    diagonal) matrices with one pattern, varying values."""
    rng = np.random.default_rng(seed)
    L = _laplacian(m)
    out = []
    for _ in range(N):
        a = 1.0 + 0.2 * rng.random(L.shape[0])
        D = sp.diags(np.sqrt(a))
        A = sp.csr_matrix(D @ L @ D - shift * sp.eye(L.shape[0]))
        A.sort_indices()
        out.append((A, rng.standard_normal(L.shape[0])))
    return out


@pytest.fixture
def count_solves(monkeypatch):
    """Count strategy solves per right-hand side (identified by the array object)."""
    calls = Counter()
    for cls in (LUStrategy, KrylovStrategy):
        orig = cls.solve

        def counted(self, A, b, x0=None, _orig=orig):
            calls[id(b)] += 1
            return _orig(self, A, b, x0)

        monkeypatch.setattr(cls, "solve", counted)
    return calls


def _assert_solved(res, systems):
    assert res.converged.all()
    for (A, b), x in zip(systems, res.solutions, strict=True):
        assert np.linalg.norm(b - A @ x) <= RTOL * np.linalg.norm(b)
        xref = spla.spsolve(A.tocsc(), b)
        assert np.linalg.norm(x - xref) <= 1e-6 * np.linalg.norm(xref)


def test_probed_systems_are_solved_once(count_solves, monkeypatch, probe_always):
    # no budget stop: on a slow or loaded machine amg-cg's probe could exceed 3x LU's
    # cost and be dropped, which another test covers
    monkeypatch.setattr(auto, "PROBE_BUDGET", float("inf"))
    systems = _sequence(12)
    res = solve_sequence(systems, rtol=RTOL)
    # two systems per candidate, then the direct candidate times its backends
    # (CHOLMOD, MUMPS: analysis + one refactorization each; SuperLU once) on the next
    n_probe = int(re.search(r"probe on (\d+) systems", res.explanation).group(1))
    extra = ({"cg+hypre"} if auto.hypre_available() else set()) | {"dcg+amg"}
    assert 4 <= n_probe <= 2 * (2 + len(extra)) + 4  # + a third dcg solve
    assert set(res.probe) == {"direct-reuse", "amg-cg"} | extra
    # every system exactly once: the probe's solutions are the results
    assert sorted(count_solves[id(b)] for _, b in systems) == [1] * len(systems)
    _assert_solved(res, systems)


def test_probe_solve_over_budget_is_stopped_and_resolved(count_solves, monkeypatch, probe_always):
    """A zero budget stops the iterative candidate at its second iteration: the system
    is re-solved by the cheapest candidate (LU) and the candidate dropped."""
    monkeypatch.setattr(auto, "PROBE_BUDGET", 0.0)
    monkeypatch.setattr(auto, "PROBE_MIN_BUDGET_S", 0.0)
    systems = _sequence(12, seed=1)
    res = solve_sequence(systems, rtol=RTOL, maxiter=5000)
    assert res.method == "auto->direct-reuse"
    # every iterative candidate but the first (nothing to budget against) is stopped
    k = auto.hypre_available() + 1  # + dcg+amg
    assert res.explanation.count("stopped after") == k and "re-solved by" in res.explanation
    counts = sorted(count_solves[id(b)] for _, b in systems)
    assert counts == [1] * (len(systems) - k) + [2] * k  # only the stopped systems twice
    # every kept solution is LU's but the first and the re-solves of stopped probes
    assert (res.iterations > 0).sum() <= 1 + k
    _assert_solved(res, systems)


def test_indefinite_sequence_cg_candidate_does_not_cost_the_run(count_solves, probe_always):
    """Symmetric indefinite matrices with a positive diagonal look SPD to the structure
    test; CG fails on them. auto must still return LU solutions for all systems, with
    at most one extra solve per CG candidate (the failed or stopped probe)."""
    systems = _sequence(10, shift=0.3, seed=2)
    res = solve_sequence(systems, rtol=RTOL, maxiter=20000)
    assert res.method == "auto->direct-reuse"
    assert "stopped after" in res.explanation or "did not converge" in res.explanation
    # each CG candidate (pyamg, deflated, BoomerAMG) fails once
    extra = 2 + auto.hypre_available()  # cg+amg, dcg+amg
    assert sum(count_solves[id(b)] for _, b in systems) <= len(systems) + extra
    _assert_solved(res, systems)


def _convdiff_sequence(N, m=16, seed=3):
    """Upwind convection-diffusion with a varying wind: nonsymmetric, one pattern."""
    rng = np.random.default_rng(seed)
    L = _laplacian(m)
    D = sp.diags([-1.0, 1.0], [-1, 0], shape=(m, m))
    Dx = sp.kron(sp.eye(m), D)
    out = []
    for _ in range(N):
        A = sp.csr_matrix(L + (0.5 + rng.random()) * Dx)
        A.sort_indices()
        out.append((A, rng.standard_normal(m * m)))
    return out


def test_small_2d_sequences_are_probed_too(count_solves):
    """No size or bandwidth rule skips the probe (issue 23): small 2-D sequences are
    measured, and sparse direct solves win there by a wide margin."""
    for systems in (_convdiff_sequence(10), _sequence(10)):  # nonsymmetric and SPD
        res = solve_sequence(systems, rtol=RTOL)
        assert res.method == "auto->direct-reuse" and "probe on" in res.explanation
        assert "direct-reuse" in res.probe
        # a failed or stopped iterative probe re-solves at most one system
        assert sum(count_solves[id(b)] for _, b in systems) <= len(systems) + 1
        _assert_solved(res, systems)
    # a preconditioner chosen by the caller is still probed
    systems = _convdiff_sequence(10)
    res = solve_sequence(systems, rtol=RTOL, pc="jacobi")
    # probed: either timed to completion or stopped over budget (machine-dependent),
    # and named in the explanation either way
    assert "probe on" in res.explanation and "gmres+jacobi" in res.explanation
    _assert_solved(res, systems)


def test_small_3d_sequence_is_still_probed(count_solves):
    """A 3-D-like graph (envelope ~ n^(5/3)) is not sent to LU blindly, even when small."""
    m = 20  # 8000 unknowns; RCM envelope ~ 0.55 m^2 n
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    I = sp.eye(m)
    L = sp.csr_matrix(sp.kron(sp.kron(T, I), I) + sp.kron(sp.kron(I, T), I)
                      + sp.kron(sp.kron(I, I), T))
    rng = np.random.default_rng(4)
    systems = [(sp.csr_matrix(L + sp.diags(rng.random(m ** 3))), rng.standard_normal(m ** 3))
               for _ in range(6)]
    for A, _ in systems:
        A.sort_indices()
    res = solve_sequence(systems, rtol=RTOL)
    assert "probe on" in res.explanation
    _assert_solved(res, systems)


def test_probe_allowance_bounds_short_runs(count_solves, monkeypatch):
    """With no allowance left the race stops after the first candidate that finished:
    the others are 'not probed', no system is solved twice; a large auto_total buys the
    race back."""
    monkeypatch.setattr(auto, "PROBE_SHARE", 0.0)
    monkeypatch.setattr(auto, "PROBE_MIN_ALLOWANCE_S", 0.0)
    systems = _sequence(10, seed=5)
    res = solve_sequence(systems, rtol=RTOL)
    assert "not probed (the probe's allowance" in res.explanation
    assert len(res.probe) == 1  # only the first candidate has a measured cost
    assert sorted(count_solves[id(b)] for _, b in systems) == [1] * len(systems)
    _assert_solved(res, systems)
    monkeypatch.setattr(auto, "PROBE_SHARE", 0.1)
    res = solve_sequence(systems, rtol=RTOL, auto_total=10**6)
    assert "not probed" not in res.explanation and len(res.probe) >= 2
    _assert_solved(res, systems)
    with pytest.raises(auto.InputError, match="auto_total"):
        solve_sequence(systems, auto_total=0)


@pytest.fixture
def probe_order(monkeypatch):
    """The labels of the strategies auto's probe runs, in order."""
    order = []
    orig = auto._probe_one

    def spy(run, strategy, pos, budget=None):
        order.append(strategy.label)
        return orig(run, strategy, pos, budget)

    monkeypatch.setattr(auto, "_probe_one", spy)
    return order


def test_first_candidate_probed_is_boomeramg_direct_last(probe_order, probe_always):
    """BoomerAMG's first solve sets the reference cost, pyamg CG comes next, and the
    direct candidate only after every iterative candidate had its timed solve (its first
    factorization must not spend the allowance before them: darcy3d zoo family)."""
    if not auto.hypre_available():
        pytest.skip("petsc4py with hypre not installed")
    order = probe_order
    res = solve_sequence(_sequence(12, seed=6), rtol=RTOL)
    firsts = list(dict.fromkeys(order))
    assert firsts[:2] == ["cg+hypre", "amg-cg"] and firsts[-1] == "direct-reuse"
    first_lu = order.index("direct-reuse")
    assert set(order[first_lu:]) == {"direct-reuse"}  # every iterative probe came before it
    assert res.converged.all()


@pytest.mark.parametrize("projected, probed", [(1e3, False), (0.0, True)])
def test_direct_candidate_projected_too_costly_is_not_run(monkeypatch, probe_always, probe_order,
                                                          projected, probed):
    """A factorization cannot be stopped: the direct candidate whose first factorization
    is projected (from two patches) far above the cheapest solve is dropped before it
    runs; one projected cheap is probed as before. Every system is solved either way."""
    monkeypatch.setattr(LUStrategy, "projected_factor_seconds", lambda self, A: projected)
    systems = _sequence(12, seed=6)
    res = solve_sequence(systems, rtol=RTOL)
    assert ("direct-reuse" in probe_order) == probed
    assert ("direct-reuse not probed (its first factorization, projected" in res.explanation) \
        == (not probed)
    _assert_solved(res, systems)


def test_factorization_projection_of_a_3d_grid():
    """The projection factorizes two RCM patches (timed, so only its form is checked
    here: positive times, an exponent in [1, 2.5]); under 1024 rows there is none."""
    from femno.solvers.factor import project_factor_seconds

    assert project_factor_seconds(_laplacian(20), backend="superlu") is None  # 400 rows
    m = 16
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    I = sp.eye(m)
    L3 = sp.csr_matrix(sp.kron(sp.kron(T, I), I) + sp.kron(sp.kron(I, T), I)
                       + sp.kron(sp.kron(I, I), T))
    p = project_factor_seconds(L3, backend="superlu")
    assert p.seconds > 0 and p.solve_seconds > 0 and 1.0 <= p.alpha <= 2.5


def test_no_projection_once_the_direct_candidate_has_factorized(monkeypatch, probe_always):
    """On an indefinite sequence CG fails and the direct candidate rescues the system;
    having factorized, it is not projected again (2.5e5 Helmholtz zoo row: 0.58 s
    wasted), and every system is still solved."""
    calls = []
    orig = LUStrategy.projected_factor_seconds

    def spy(self, A):
        calls.append(self.n_factorizations)
        return orig(self, A)

    monkeypatch.setattr(LUStrategy, "projected_factor_seconds", spy)
    systems = _sequence(10, shift=0.3, seed=2)
    res = solve_sequence(systems, rtol=RTOL, maxiter=20000)
    assert all(n == 0 for n in calls)  # projected only before its first factorization
    _assert_solved(res, systems)
