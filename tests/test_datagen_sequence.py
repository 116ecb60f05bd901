"""Tests of femno.datagen.solve_sequence and its ``auto`` strategy."""

import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from femno.datagen import SEQUENCE_METHODS, SequenceResult, analyze, solve_sequence
from femno.datagen.strategy import LUStrategy
from femno.errors import ConvergenceError, InputError
from femno.fem.families import get_family

RTOL = 1e-10
RECYCLING = ("skr", "recycle", "gcrodr", "dcg")


def make_sequence(name, n, N, seed=0):
    fam = get_family(name, n=n)
    rng = np.random.default_rng(seed)
    params = [fam.sample(rng) for _ in range(N)]
    systems = [fam.assemble(p) for p in params]
    feats = np.array([fam.features(p) for p in params])
    refs = [spla.spsolve(s.A.tocsc(), s.b) for s in systems]
    return systems, feats, refs


@pytest.fixture(scope="module")
def darcy():
    return make_sequence("darcy", 24, 8)


@pytest.fixture(scope="module")
def poisson():
    return make_sequence("poisson", 24, 8)


def assert_matches(res, refs, tol=1e-7):
    assert isinstance(res, SequenceResult) and len(res) == len(refs)
    for i, (x, y) in enumerate(zip(res.solutions, refs, strict=True)):
        err = np.linalg.norm(x - y) / np.linalg.norm(y)
        assert err < tol, f"system {i}: relative error {err:.2e} ({res.method})"
    assert res.converged.all() and np.all(res.residuals <= RTOL)
    assert res.times.shape == (len(refs),) and np.all(res.times > 0)
    assert res.total_s >= res.times.sum() * 0.99


def run_method(method, systems, **kw):
    # keep the unpreconditioned paper methods fast on the test size
    if method in ("skr", "recycle", "gcrodr", "gmres"):
        kw.setdefault("pc", "jacobi")
    return solve_sequence(systems, method=method, rtol=RTOL, **kw)


@pytest.mark.parametrize("method", [m for m in SEQUENCE_METHODS if m != "block"])
def test_every_method_matches_spsolve_darcy(darcy, method):
    systems, _, refs = darcy
    res = run_method(method, systems)
    assert_matches(res, refs)
    assert res.method.startswith(method) or method in ("cg", "gmres")
    if method in ("direct", "direct-fresh", "block") or res.method.endswith("direct-reuse"):
        assert res.iterations.max() == 0 or method == "auto"


@pytest.mark.parametrize("method", list(SEQUENCE_METHODS))
def test_every_method_matches_spsolve_fixed_poisson(poisson, method):
    systems, _, refs = poisson
    res = run_method(method, systems)
    assert_matches(res, refs)


def test_skr_paper_default_no_preconditioner():
    systems, _, refs = make_sequence("darcy", 12, 5, seed=3)
    res = solve_sequence(systems, method="skr", rtol=RTOL)
    assert res.method == "skr" and res.stats[0].pc == "none"
    assert_matches(res, refs)


@pytest.mark.parametrize("method", ["direct", "amg-cg", "skr"])
def test_solutions_in_callers_order_after_sort(darcy, method):
    systems, feats, refs = darcy
    perm = [5, 2, 7, 0, 3, 6, 1, 4]
    res = run_method(method, systems, sort=perm, warm_start=True)
    assert res.order.tolist() == perm
    assert_matches(res, refs)
    seen = []
    res2 = run_method(method, systems, sort="greedy", features=feats,
                      callback=lambda i, x, st: seen.append(i))
    assert seen == res2.order.tolist() and sorted(seen) == list(range(8))
    assert res2.order.tolist() != list(range(8)) and res2.sort_s > 0
    assert_matches(res2, refs)


def test_skr_sorts_by_default_others_do_not(darcy):
    systems, _, refs = darcy
    res = solve_sequence(systems, method="skr", pc="jacobi", rtol=RTOL)
    assert res.order.tolist() != list(range(8)) and "sorted: greedy" in res.explanation
    res = solve_sequence(systems, method="direct", rtol=RTOL)
    assert res.order.tolist() == list(range(8)) and res.sort_s == 0.0


def test_carried_recycling_beats_fresh_on_fixed_matrix():
    systems, _, refs = make_sequence("poisson", 24, 8, seed=1)
    fresh = solve_sequence(systems, method="gcrodr", rtol=RTOL)
    carried = solve_sequence(systems, method="recycle", rtol=RTOL)
    assert_matches(carried, refs)
    assert carried.iterations.sum() < fresh.iterations.sum()
    assert carried.iterations[1:].mean() < fresh.iterations[1:].mean()


def test_auto_fixed_matrix_picks_reuse(poisson):
    systems, _, refs = poisson
    res = solve_sequence(systems, rtol=RTOL)
    assert res.method == "auto->block"
    assert "same matrix" in res.explanation and "reuse one LU factorization" in res.explanation
    assert_matches(res, refs)


def test_auto_varying_matrix_probes_and_keeps_probe_solutions(darcy, probe_always):
    systems, _, refs = darcy
    calls = []
    res = solve_sequence(systems, rtol=RTOL, callback=lambda i, x, st: calls.append(i))
    assert res.method in ("auto->direct-reuse", "auto->amg-cg")
    import femno.datagen.auto as auto

    hypre = {"cg+hypre"} if auto.hypre_available() else set()
    assert "probe on" in res.explanation and set(res.probe) <= {"direct-reuse", "amg-cg", "dcg+amg"} | hypre
    assert {"direct-reuse", "amg-cg"} <= set(res.probe)
    assert sorted(calls) == list(range(8))  # each system solved once, probes kept
    assert_matches(res, refs)
    info = analyze([s.A for s in systems])
    assert info["shared_pattern"] and info["symmetric"] and not info["fixed"]


def test_lu_envelope_separates_2d_from_3d():
    from femno.datagen.auto import lu_envelope

    def lap(m, d):
        T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
        out = T
        for _ in range(d - 1):
            out = sp.kron(out, sp.eye(m)) + sp.kron(sp.eye(out.shape[0]), T)
        return sp.csr_matrix(out)

    n2, n3 = 40 ** 2, 12 ** 3
    e2, e3 = lu_envelope(lap(40, 2)), lu_envelope(lap(12, 3))
    # profile ~ n * bandwidth: bandwidth ~ n^(1/2) in 2-D, ~ n^(2/3) in 3-D
    assert 0.5 * 40 * n2 <= e2 <= 2 * 40 * n2
    assert 0.5 * 12 ** 2 * n3 <= e3 <= 2 * 12 ** 2 * n3


def test_auto_skips_lu_when_the_factor_would_not_fit(darcy, monkeypatch):
    import femno.datagen.auto as auto

    systems, _, refs = darcy
    monkeypatch.setattr(auto, "DIRECT_ALWAYS_N", 0)
    monkeypatch.setattr(auto, "DIRECT_MAX_ENVELOPE", 10)
    res = solve_sequence(systems, rtol=RTOL)
    assert res.method in ("auto->amg-cg", "auto->cg+hypre") and "no sparse LU" in res.explanation
    assert "direct-reuse" not in res.probe
    assert_matches(res, refs)
    fixed, _, frefs = make_sequence("poisson", 24, 4, seed=2)
    res = solve_sequence(fixed, rtol=RTOL)
    assert res.method in ("auto->amg-cg", "auto->cg+hypre") and "no sparse LU" in res.explanation
    assert_matches(res, frefs)


def test_direct_reuses_factorization_and_ordering(darcy, poisson):
    from femno.solvers.factor import available_backends

    have = available_backends()
    lu = LUStrategy()
    for s in darcy[0]:
        x, st = lu.solve(s.A.tocsr(), s.b)
        assert st.converged and np.linalg.norm(s.A @ x - s.b) <= RTOL * np.linalg.norm(s.b)
    # the probe: every library backend pays one analysis and times one refactorization
    libs = [b for b in ("cholmod", "mumps") if have[b]]
    assert lu.n_factorizations == 8 and lu.symbolic_reused == 8 - len(libs) - ("superlu" in lu.probe)
    assert set(libs) <= set(lu.probe) and lu.backend == min(lu.probe, key=lu.probe.get)
    for backend in libs:  # a pinned backend analyses the pattern once
        pinned = LUStrategy(backend=backend)
        for s in darcy[0]:
            pinned.solve(s.A.tocsr(), s.b)
        assert pinned.symbolic_reused == 7 and pinned.backend == backend
    res = solve_sequence(poisson[0], method="direct", rtol=RTOL)
    assert "1 factorizations" in res.explanation
    assert res.stats[1].setup_s == 0.0


def test_inputs_dense_pairs_and_objects():
    T = sp.diags([-1.0, 2.2, -1.0], [-1, 0, 1], shape=(20, 20), format="csr")
    b = np.linspace(0, 1, 20)
    systems = [(T.toarray(), b), (T * 2.0, b)]
    res = solve_sequence(systems, method="direct")
    assert np.allclose(T @ res.solutions[0], b) and np.allclose(2 * T @ res.solutions[1], b)
    d = res.as_dict()
    json.dumps(d)
    assert d["n_systems"] == 2 and "solutions" not in d
    assert len(res.as_dict(solutions=True)["solutions"]) == 2
    assert "systems/s" in res.summary()


@pytest.fixture()
def counter():
    calls = []
    return calls, (lambda i, x, st: calls.append(i))


def _ok_pair(n=5):
    return sp.eye(n, format="csr") * 2.0, np.ones(n)


@pytest.mark.parametrize("systems, kw, match", [
    ([], {}, "empty"),
    ([_ok_pair(), (sp.eye(5), np.ones(4))], {}, "system 1: right-hand side has length 4"),
    ([_ok_pair(), _ok_pair(), (sp.eye(5), np.full(5, np.nan))], {},
     "system 2: right-hand side has NaN"),
    ([(sp.csr_matrix(np.diag([1.0, np.nan])), np.ones(2))], {}, "system 0: matrix has NaN"),
    ([_ok_pair(), (sp.eye(5, 4), np.ones(5))], {}, "system 1: matrix must be square"),
    ([_ok_pair(), 3.0], {}, "system 1: expected an"),
    ([_ok_pair()] * 3, {"method": "fastest"}, "unknown method 'fastest'"),
    ([_ok_pair()] * 3, {"sort": [0, 1]}, "length 2 but there are 3"),
    ([_ok_pair()] * 3, {"sort": [0, 1, 1]}, "not a permutation"),
    ([_ok_pair()] * 3, {"sort": "alphabetical"}, "unknown sort"),
    ([_ok_pair()] * 3, {"features": np.ones((2, 4))}, "2 rows but there are 3"),
    ([_ok_pair()] * 3, {"rtol": -1.0}, "rtol"),
    ([_ok_pair()] * 3, {"k": 40, "restart": 40, "method": "skr"}, "k < restart"),
    ([_ok_pair()] * 3, {"on_fail": "explode"}, "on_fail"),
    ([_ok_pair()] * 3, {"pc": "magic"}, "unknown preconditioner"),
    ([_ok_pair()] * 3, {"method": "direct", "pc": "ilu"}, "direct solver"),
    ([_ok_pair()] * 3, {"method": "amg-cg", "pc": "jacobi"}, "uses AMG"),
    ([_ok_pair(), (sp.eye(5, format="csr") * 3.0, np.ones(5))], {"method": "block"},
     "same matrix"),
    (42, {}, "sequence"),
])
def test_bad_input_raises_before_solving(systems, kw, match, counter):
    calls, cb = counter
    with pytest.raises(InputError, match=match):
        solve_sequence(systems, callback=cb, **kw)
    assert calls == []


def test_on_fail_raise_stops_and_names_system(darcy, counter):
    systems, _, _ = darcy
    calls, cb = counter
    with pytest.raises(ConvergenceError, match=r"system 3 \(solve position 0\)") as exc:
        solve_sequence(systems, method="gmres", maxiter=3, sort=[3, 0, 1, 2, 4, 5, 6, 7],
                       callback=cb)
    assert calls == [3]  # the rest were not attempted
    assert exc.value.x is not None and exc.value.stats.iterations <= 3


def test_on_fail_warn_records_and_continues(darcy):
    systems, _, _ = darcy
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = solve_sequence(systems, method="cg", pc="none", maxiter=2, on_fail="warn")
    assert not res.converged.any() and len(res.solutions) == 8
    assert np.all(res.iterations <= 2) and np.all(res.residuals > 1e-8)


def test_progress_bar_and_warm_start(darcy, capsys):
    systems, feats, refs = darcy
    cold = solve_sequence(systems, method="amg-cg", rtol=RTOL, sort="greedy", features=feats)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warm = solve_sequence(systems, method="amg-cg", rtol=RTOL, sort="greedy",
                              features=feats, warm_start=True, progress=True)
    assert "system" in capsys.readouterr().err
    assert_matches(warm, refs)
    assert warm.iterations.sum() <= cold.iterations.sum()


def test_auto_small_and_user_pc(darcy, probe_always):
    systems, _, refs = darcy
    res = solve_sequence(systems[:2], rtol=RTOL)
    assert res.method == "auto->direct-reuse" and "too few" in res.explanation
    res = solve_sequence(systems, rtol=RTOL, pc="ilu")  # nonsymmetric pc: GMRES candidate
    assert set(res.probe) == {"direct-reuse", "gmres+ilu"}
    assert_matches(res, refs)
    res = solve_sequence(systems[:1], rtol=RTOL)
    assert res.method == "auto->direct" and "one system" in res.explanation


def test_auto_drops_failing_krylov_candidate(darcy, probe_always):
    systems, _, refs = darcy
    res = solve_sequence(systems, rtol=RTOL, maxiter=1)  # AMG-CG cannot make it in 1 step
    assert res.method == "auto->direct-reuse" and "did not converge" in res.explanation
    assert_matches(res, refs)


def test_direct_refines_until_the_residual_stops_halving(monkeypatch):
    """An inexact factor ((I + E) A^{-1}, ||E|| ~ 1e-2) needs two refinement steps to reach
    rtol 1e-5 (residuals ~1e-2, 1e-4, 1e-6); one step, as before, is not enough."""
    import scipy.sparse as sp

    from femno.datagen import strategy as st

    T = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(60, 60), format="csr")
    rng = np.random.default_rng(0)
    E = 1e-2 * rng.standard_normal((60, 60)) / np.sqrt(60)
    exact = st.LUStrategy._apply

    def inexact(self, B):
        X = exact(self, B)
        return X + E @ X

    monkeypatch.setattr(st.LUStrategy, "_apply", inexact)
    b = rng.standard_normal(60)
    x, stats = st.LUStrategy(rtol=1e-5).solve(T, b)
    assert stats.converged and np.linalg.norm(b - T @ x) <= 1e-5 * np.linalg.norm(b)
    X, _, _, res = st.LUStrategy(rtol=1e-5).solve_block(T, np.column_stack([b, 2 * b + 1]))
    assert np.all(res <= 1e-5)
    monkeypatch.setattr(st, "REFINE_STEPS", 1)
    _, stats = st.LUStrategy(rtol=1e-5).solve(T, b)
    assert not stats.converged


def test_check_sequence_options_without_systems():
    from femno.datagen.sequence import check_sequence_options

    assert check_sequence_options("cg", pc="amg", rtol="1e-7", maxiter=50) == 1e-7
    with pytest.raises(InputError, match="unknown solver options \\['kk'\\]"):
        check_sequence_options("skr", kk=3)
    with pytest.raises(InputError, match="direct solver"):
        check_sequence_options("direct", pc="ilu")
    with pytest.raises(InputError, match="positive number below 1"):
        check_sequence_options("gmres", rtol=2.0)
