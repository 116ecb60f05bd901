r"""``method="auto"``: pick the fastest strategy from the structure and a short probe.

The cost of a sequence of :math:`N` systems with strategy :math:`s` is modelled as

.. math:: T_s \approx T_s^{\text{first}} + (N - 1)\, t_s ,

a first solve that pays the setup (factorization, AMG hierarchy, ordering) and a
steady per-system cost :math:`t_s` (numeric refactorization on the same ordering,
AMG hierarchy update, triangular solves). The decision:

1. **Same matrix for all systems** (only :math:`b` changes): nothing beats one
   sparse LU factorization followed by triangular solves for all right-hand
   sides at once (a few ms per system at :math:`10^4` unknowns against tens of ms
   for any Krylov solve). ``auto`` factorizes once and solves all systems as a block (``auto->block``); right-hand sides that span a
   low-dimensional space are solved through a basis of it
   (:func:`~femno.datagen.strategy.range_basis`). Above :data:`DIRECT_MAX_N` unknowns, or when
   :func:`lu_envelope` says the factor may not fit (3-D-like graphs), AMG-CG with a
   reused hierarchy is used instead.
2. **Matrices differ**: a timed probe. Each candidate -- a sparse direct solve with analysis
   reuse (unless :func:`direct_feasible` rules it out), AMG-preconditioned CG
   (symmetric matrices with a positive diagonal) or GMRES (others) with the
   hierarchy updated in place, and the same Krylov method on PETSc with hypre
   BoomerAMG where petsc4py has hypre (:func:`hypre_available`), CG/GMRES with PETSc's
   GAMG when the caller gives a near-nullspace (``solve_sequence(near_nullspace=)``,
   e.g. rigid-body modes; every AMG candidate then gets it), and for SPD-like
   matrices deflated CG with AMG and the deflation space carried along the sorted
   sequence (``dcg+amg``) -- solves two systems
   (one when :math:`N < 8`); the second solve measures the steady cost
   :math:`t_s` (the smaller of wall-clock and process CPU time, so that other
   load on the machine does not skew it). The cheapest :math:`t_s` solves the
   rest. Probe solutions are kept (no system is solved twice unless a probe solve
   fails). A probe solve of an iterative candidate is stopped once its iterations
   have cost :data:`PROBE_BUDGET` times the cheapest per-system cost measured so
   far (it cannot win; e.g. CG on an indefinite matrix), and a solve that fails
   to converge, breaks down or is stopped is re-solved by the cheapest candidate;
   the failing candidate is dropped. Every 8 systems the running median cost of
   the chosen strategy is compared with the others' estimates; a rival that looks
   more than 10% cheaper gets one more timed (budgeted) system and takes over if
   it confirms (timings on a shared machine are noisy, and costs drift along a
   sequence).
   No size or bandwidth rule skips the probe. The direct candidate
   (:class:`~femno.datagen.strategy.LUStrategy`) measures its own backends --
   CHOLMOD (SPD), MUMPS, and a fresh SuperLU where it can compete -- on the next
   systems and reports the cheapest steady cost. The envelope bound of
   :func:`direct_feasible` only keeps a sparse LU that could take minutes and
   gigabytes out of the probe; should every iterative candidate fail, the race
   still falls back to a direct solve. A factorization cannot be stopped, so before
   the direct candidate's first one its cost is measured on two small patches of the
   matrix and projected (:func:`~femno.solvers.factor.project_factor_seconds`); one
   projected above :data:`DIRECT_PROJECTION_MARGIN` x :data:`PROBE_BUDGET` x the
   cheapest solve so far cannot win and is not run.

Order and allowance. BoomerAMG is probed first (cheap set-up, the usual winner), pyamg
CG second, the direct candidate after every iterative one had its probe rounds. Before any candidate has finished a solve,
an iterative probe solve is stopped after :data:`FIRST_PROBE_MATVECS` mat-vecs' worth
of time. The solves by losing candidates may cost at most :data:`PROBE_SHARE` of the
projected total, :math:`\text{PROBE\_SHARE} \cdot N_\text{total}\, t_\text{fast}`
(a completed losing solve costs its excess over :math:`t_\text{fast}`, a stopped one all
its time; ``N_total`` is ``solve_sequence``'s ``auto_total``, default the run's length):
the allowance is at least :data:`PROBE_MIN_ALLOWANCE_S`;
a candidate that does not fit in what is left is not probed, so a short run keeps
the first good candidate instead of paying for a race it cannot amortize.
Within that allowance a rejected candidate costs at most
:math:`2 (t_\text{slow} - t_\text{fast})` and a failing one its preconditioner set-up
plus :math:`(\text{PROBE\_BUDGET} + 1)\, t_\text{fast}`.

>>> import numpy as np, scipy.sparse as sp
>>> from femno.datagen import solve_sequence
>>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
>>> res = solve_sequence([(T * (1 + 0.01 * i), np.ones(50)) for i in range(10)])
>>> res.method in ("auto->direct-reuse", "auto->amg-cg"), "probe" in res.explanation
(True, True)
"""

from __future__ import annotations

import time

import numpy as np

from femno.datagen.strategy import (
    KrylovStrategy,
    LUStrategy,
    RecycleStrategy,
    same_matrix,
    same_pattern,
)
from femno.errors import InputError

__all__ = ["analyze", "run_auto", "hypre_available", "gamg_available", "DIRECT_MAX_N", "DIRECT_MAX_ENVELOPE", "lu_envelope",
           "direct_feasible", "PROBE_BUDGET", "PROBE_SHARE", "PROBE_MIN_ALLOWANCE_S",
           "DIRECT_PROJECTION_MARGIN",
           "FIRST_PROBE_MATVECS"]

#: above this many unknowns ``auto`` does not try a sparse LU factorization
DIRECT_MAX_N = 400_000
#: nor when the envelope (profile) of ``A`` in reverse Cuthill--McKee order holds more
#: entries than this: an upper bound of the LU fill that separates 2-D-like graphs
#: (envelope ~ n^1.5: 2e7 at 71k unknowns) from 3-D-like ones (~ n^1.67: 1e9 at 250k
#: unknowns, where a sparse LU needs minutes and gigabytes)
DIRECT_MAX_ENVELOPE = 300_000_000
#: below this many unknowns a sparse LU is always tried (no envelope computed)
DIRECT_ALWAYS_N = 20_000
#: a probe solve of an iterative candidate stops once its iterations (preconditioner
#: setup excluded) have cost this many times the cheapest per-system cost measured so
#: far, and at least PROBE_MIN_BUDGET_S seconds
PROBE_BUDGET = 3.0
PROBE_MIN_BUDGET_S = 0.02
#: the direct candidate goes on timing its other backends only while its cost is at
#: most this many times the best other candidate's (otherwise it cannot win anyway)
DIRECT_PROBE_MARGIN = 1.5
#: the direct candidate is not probed when its first factorization, projected from two
#: patches of the matrix, exceeds this many times PROBE_BUDGET x the cheapest solve
DIRECT_PROJECTION_MARGIN = 2.0
#: the probe's solves by losing candidates may cost at most this share of the projected
#: total (systems served x cheapest per-system cost); a candidate that cannot be tried
#: within what is left is not probed (bounds the probe on short runs, issue 23)
PROBE_SHARE = 0.1
#: ... but never less than this many seconds (a race over millisecond solves is cheap)
PROBE_MIN_ALLOWANCE_S = 0.1
#: budget of an iterative probe solve before any candidate has finished one: this many
#: mat-vecs with A (a solve to rtol 1e-8 by a good preconditioner costs ~100-500)
FIRST_PROBE_MATVECS = 1000


def lu_envelope(A) -> int:
    r"""Envelope size :math:`\sum_i (i - \min\{j : a_{ij} \ne 0\})^+` of ``A`` in RCM order.

    A cheap (:math:`O(\mathrm{nnz})`) upper bound of the fill of a sparse LU
    factor (the factor of a banded/profile solver lives inside the envelope).

    >>> import scipy.sparse as sp
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(10, 10), format="csr")
    >>> lu_envelope(T)
    9
    """
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    A = sp.csr_matrix(A)
    S = (abs(A) + abs(A).T).tocsr()
    perm = reverse_cuthill_mckee(S, symmetric_mode=True)
    P = S[perm][:, perm].tocsr()
    rows = np.repeat(np.arange(P.shape[0]), np.diff(P.indptr))
    first = np.full(P.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(first, rows, P.indices)
    first = np.minimum(first, np.arange(P.shape[0]))
    return int(np.sum(np.arange(P.shape[0]) - first))


def direct_feasible(A) -> tuple[bool, str]:
    """Whether ``auto`` should try a sparse LU of ``A``, and why not."""
    n = A.shape[0]
    if n > DIRECT_MAX_N:
        return False, f"n={n} > {DIRECT_MAX_N:,}: no sparse LU"
    if n < DIRECT_ALWAYS_N:
        return True, ""
    env = lu_envelope(A)
    if env > DIRECT_MAX_ENVELOPE:
        return False, (f"no sparse LU: the RCM envelope of A holds {env:.2g} entries "
                       f"(> {DIRECT_MAX_ENVELOPE:.0e}; a 3-D-like graph, whose LU factor "
                       "would take minutes and gigabytes)")
    return True, ""


def hypre_available() -> bool:
    """Whether BoomerAMG through PETSc can run here (petsc4py with hypre)."""
    from femno.solvers.petsc_backend import have_petsc

    if not have_petsc():
        return False
    from femno.solvers.petsc_backend.info import external_packages

    return bool(external_packages().get("hypre"))


def gamg_available() -> bool:
    """Whether PETSc's GAMG can run here (petsc4py importable)."""
    from femno.solvers.petsc_backend import have_petsc

    return bool(have_petsc())


def analyze(As) -> dict:
    """Structure of a sequence of csr matrices.

    Returns a dict with ``N``, ``n``, ``nnz`` (of the first matrix), ``fixed``
    (all equal), ``shared_pattern``, ``symmetric`` (first matrix, to 1e-12
    relative) and ``positive_diagonal``.

    >>> import scipy.sparse as sp
    >>> info = analyze([sp.eye(3, format="csr")] * 2)
    >>> info["fixed"], info["symmetric"], info["n"]
    (True, True, 3)
    """
    A0 = As[0]
    shared = all(same_pattern(A, A0) for A in As[1:])
    fixed = shared and all(same_matrix(A, A0) for A in As[1:])
    diff = abs(A0 - A0.T)
    scale = float(abs(A0).max()) if A0.nnz else 1.0
    symmetric = bool(diff.nnz == 0 or float(diff.max()) <= 1e-12 * scale)
    return {"N": len(As), "n": int(A0.shape[0]), "nnz": int(A0.nnz), "fixed": bool(fixed),
            "shared_pattern": bool(shared), "symmetric": symmetric,
            "positive_diagonal": bool(np.all(A0.diagonal() > 0))}


def _structure_text(info) -> str:
    if info["fixed"]:
        kind = "the same matrix for all systems"
    elif info["shared_pattern"]:
        kind = "matrices differ, one sparsity pattern"
    else:
        kind = "matrices differ in pattern"
    sym = "symmetric" if info["symmetric"] else "nonsymmetric"
    return f"{info['N']} systems, n={info['n']}, nnz={info['nnz']}, {kind}, {sym}"


def run_auto(run, *, pc="auto", k=20, restart=40, maxiter=None, total=None,
             near_nullspace=None, block_size=1):
    """Run ``auto`` on a :class:`~femno.datagen.sequence.SequenceRun`.

    ``total``: number of systems the choice serves (default: the run's), which sets
    the probe's allowance (:data:`PROBE_SHARE`).  ``near_nullspace``/``block_size``
    (checked by the caller) go to every AMG candidate and add CG with PETSc's GAMG,
    probed first.  Returns ``(label, explanation, probe)`` with ``probe`` the
    measured steady seconds per system of each candidate.
    """
    nns = {} if near_nullspace is None else {"near_nullspace": near_nullspace,
                                             "block_size": block_size}
    info = analyze(run.As)
    N = info["N"]
    total = max(N, int(total or 0))
    text = _structure_text(info)
    rtol = run.rtol
    direct_ok, no_direct = direct_feasible(run.As[0])
    if no_direct:
        text += f"; {no_direct}"
    if info["fixed"] and direct_ok:
        lu = LUStrategy(reuse=True, rtol=rtol)
        if N == 1:
            first = run.solve(lu, 0)
            return "auto->direct", f"{text}: one system, sparse LU ({first:.3g} s)", {}
        t0 = time.perf_counter()
        run.solve_block(lu, range(N))
        per = (time.perf_counter() - t0) / N
        rank = ("" if lu.last_rank is None else
                f"; they span a {lu.last_rank}-dimensional space, so {lu.last_rank} "
                "triangular solves gave all of them")
        return ("auto->block",
                f"{text}: reuse one LU factorization for all {N} right-hand sides, solved as a block "
                f"({per * 1e3:.3g} ms per system, factorization included{rank})",
                {"block": per})

    kry_pc = "amg" if pc in ("auto", None) else pc
    pc_name = kry_pc if isinstance(kry_pc, str) else kry_pc.name
    from femno.solvers.precond import SYMMETRIC

    pc_symmetric = (SYMMETRIC.get(pc_name, True) if isinstance(kry_pc, str)
                    else bool(getattr(kry_pc, "symmetric", True)))
    spd_like = info["symmetric"] and info["positive_diagonal"] and pc_symmetric
    cands = []
    if direct_ok:
        cands.append(("direct-reuse", lambda: LUStrategy(reuse=True, rtol=rtol)))
    if spd_like:
        label = "amg-cg" if pc_name in ("amg", "amg-sa", "amg-rs") else f"cg+{pc_name}"
        cands.append((label, lambda: KrylovStrategy(
            "cg", pc=kry_pc, rtol=rtol, maxiter=maxiter, reuse_pc=info["shared_pattern"],
            label=label, **nns)))
        if pc_name in ("amg", "amg-sa"):
            # deflated CG, deflation space carried along the sorted sequence: pays where
            # AMG leaves a few slow modes (elasticity3d zoo family: 81 vs 147 ms/system)
            cands.append(("dcg+amg", lambda: RecycleStrategy("dcg", pc=kry_pc, rtol=rtol,
                                                             maxiter=maxiter, **nns)))
    else:
        cands.append((f"gmres+{pc_name}", lambda: KrylovStrategy(
            "gmres", pc=kry_pc, rtol=rtol, restart=restart, maxiter=maxiter,
            reuse_pc=info["shared_pattern"], **nns)))
    if pc in ("auto", None) and hypre_available():
        # BoomerAMG through PETSc: CG where CG applies, else GMRES(restart)
        kind = "cg" if spd_like else "gmres"
        cands.append((f"{kind}+hypre", lambda: KrylovStrategy(
            kind, pc="hypre", rtol=rtol, restart=restart, maxiter=maxiter,
            reuse_pc=info["shared_pattern"], backend="petsc", label=f"{kind}+hypre", **nns)))
    if pc in ("auto", None) and nns and gamg_available():
        # smoothed aggregation built on the given near-nullspace (rigid-body modes)
        kind = "cg" if spd_like else "gmres"
        cands.append((f"{kind}+gamg", lambda: KrylovStrategy(
            kind, pc="gamg", rtol=rtol, restart=restart, maxiter=maxiter,
            reuse_pc=info["shared_pattern"], backend="petsc", label=f"{kind}+gamg", **nns)))
    if info["fixed"]:  # too large for LU: one candidate, hierarchy reused
        name, make = cands[-1]
        strategy = make()
        for t in range(N):
            run.solve(strategy, t)
        return f"auto->{name}", f"{text}: too large for a direct solve; {name}", {}

    if N <= len(cands):  # too few systems to probe: the first candidate (LU) for all
        name, make = cands[0]
        strategy = make()
        for t in range(N):
            run.solve(strategy, t)
        return f"auto->{name}", f"{text}: too few systems to probe; {name}", {}
    per = 2 if N >= 4 * len(cands) else 1
    # BoomerAMG first (cheap set-up, the usual winner from ~1e4 dofs on: its first solve
    # tells how cheap a system can be), then pyamg CG (cheap set-up too since its levels
    # are CSR: on the darcy3d zoo family the direct candidate's first factorization
    # spent the allowance and amg-cg, 2x faster than BoomerAMG, was never probed), then
    # the direct candidate, then the others (with a near-nullspace: GAMG, built on it,
    # before BoomerAMG)
    rank = {"amg-cg": 1, "direct-reuse": 1.5}
    if "3-D-like" in no_direct:
        # a graph too 3-D-like for LU: pyamg CG first. On short runs the first candidate
        # decides (8 systems: the allowance pays one probe solve), and on the two 3-D zoo
        # rows pyamg beat BoomerAMG (darcy3d 0.31 vs 0.91, elasticity3d 3.1 vs 10.7
        # s/system at 2.5e5 dofs) -- rule set after looking at those rows
        rank["amg-cg"] = -0.5
    cands = sorted(cands, key=lambda c: (-1 if c[0].endswith("+gamg") else
                                         0 if c[0].endswith("+hypre") else rank.get(c[0], 2)))
    race = _Race(run, {name: make() for name, make in cands}, rtol,
                 allowance=PROBE_SHARE * total,
                 first_budget=FIRST_PROBE_MATVECS * _matvec_seconds(run.As[int(run.order[0])]))
    # iterative candidates take both probe rounds first, the direct candidate last: its
    # first factorization can spend the whole allowance (darcy3d zoo family: 147 ms, 7x a
    # BoomerAMG solve) before a cheap iterative candidate had its timed second solve
    names = [n for n in race.alive if n != "direct-reuse"]
    schedule = [(rnd, n) for rnd in range(per) for n in names]
    schedule += [(rnd, "direct-reuse") for rnd in range(per) if "direct-reuse" in race.alive]
    for rnd, name in schedule:
        if name not in race.alive:  # put out while rescuing another's failed solve
            continue
        if not race.affordable(name):
            if name in race.first and not race.costs[name]:
                # tried once, no timed solve left in the allowance: its first cost
                # (set-up included, pessimistic) is its estimate
                race.costs[name].append(race.first[name])
                continue
            race.drop(name, f"{name} not probed (the probe's allowance, "
                            f"{PROBE_SHARE:.0%} of {total} systems, is spent)")
            continue
        if name == "direct-reuse" and name not in race.first and _direct_cannot_win(race):
            continue
        first = race.first.get(name)
        if (rnd > 0 and not race.strategies[name].iterative and first is not None
                and first > PROBE_BUDGET * race.cheapest_other(name)):
            # a factorization that cost over PROBE_BUDGET x another candidate's whole
            # first solve (setup included) cannot win: no second probe
            race.drop(name, f"{name} dropped after one solve ({first * 1e3:.3g} ms > "
                            f"{PROBE_BUDGET:g}x the cheapest other candidate)")
            continue
        race.attempt(name, record_cost=rnd == per - 1)
    for name in list(race.alive):
        # a carried space is young on its second solve: one more timed solve (on the
        # elasticity3d zoo family the second cost 140 ms, the steady one 74 ms)
        if per == 2 and isinstance(race.strategies[name], RecycleStrategy) \
                and name in race.alive and race.pos < N - 1 and race.affordable(name):
            race.attempt(name)
    lu = race.strategies.get("direct-reuse")
    if lu is not None and "direct-reuse" in race.alive:
        # the direct candidate measures its backends (CHOLMOD, MUMPS, SuperLU) on the
        # next systems -- while it is in the running (estimate <= DIRECT_PROBE_MARGIN x
        # the best other); its cost is then the cheapest backend's steady cost
        while not lu.decided and race.pos < N - 1:
            rival = race.best(exclude="direct-reuse")
            # compare once a steady (refactorization) cost is known: a first solve pays
            # the analysis, which later systems do not
            if (lu.probe and rival is not None
                    and min(lu.probe.values()) > DIRECT_PROBE_MARGIN * race.estimate(rival)):
                break
            if not race.affordable("direct-reuse"):
                break
            race.attempt("direct-reuse", record_cost=False)
            if "direct-reuse" not in race.alive:
                break
        lu.finish_probe()
        if lu.backend in lu.probe:
            race.costs["direct-reuse"] = [lu.probe[lu.backend]]
    n_probe = race.pos
    best = race.best()
    first_pick = best
    since_check = 0
    while race.pos < N:
        race.attempt(best, budgeted=False)
        since_check += 1
        if best not in race.alive:  # the chosen Krylov method failed: drop it
            best = race.best()
            continue
        # re-check every 8 systems: a rival whose estimate is clearly lower gets one more
        # timed system, and takes over if it confirms (timings on a busy machine are noisy)
        if since_check >= 8 and race.pos < N - 2:
            since_check = 0
            rival = race.best(exclude=best)
            if (rival is not None and race.estimate(rival) < 0.9 * race.estimate(best)
                    and race.affordable(rival)):
                race.attempt(rival)
                if rival in race.alive and race.estimate(rival) < race.estimate(best):
                    best = rival
                    race.switches.append((race.pos, rival))
    est = {k_: race.estimate(k_) for k_ in race.costs if race.costs[k_]}
    probe_txt = ", ".join(f"{k_} {v * 1e3:.3g} ms/system" for k_, v in est.items())
    if race.failed:
        probe_txt += "; " + ", ".join(
            f"{k_} failed ({race.errors[k_]})" if k_ in race.errors else f"{k_} did not converge"
            for k_ in race.failed) + f" (re-solved by {race.rescuer})"
    if race.dropped:
        probe_txt += "; " + "; ".join(race.dropped)
    if race.stopped:
        probe_txt += "; " + ", ".join(
            f"{k_} stopped after {t * 1e3:.3g} ms (over its probe budget, "
            f"re-solved by {race.rescuer})" for k_, t in race.stopped.items())
    why = (f"{text}; probe on {n_probe} systems, then {first_pick} for the rest"
           f" (median cost {probe_txt})")
    if race.switches:
        why += "; switched to " + ", ".join(f"{k_} at position {p}" for p, k_ in race.switches)
    return f"auto->{best}", why, est


def _direct_cannot_win(race) -> bool:
    """Before the direct candidate's first (unstoppable) factorization: project its cost
    from two small patches of the matrix; a factorization projected to cost over
    DIRECT_PROJECTION_MARGIN x PROBE_BUDGET x the cheapest solve measured cannot win
    (every later system pays a numeric refactorization) and is not probed. On the
    darcy3d zoo row (~1e4 dofs) the one 3-D factorization, 155 ms, cost as much as 16
    AMG-CG solves and put auto at 1.37x the best method."""
    if not np.isfinite(race.cheapest) or race.strategies["direct-reuse"].n_factorizations:
        return False  # nothing to compare with, or it already factorized (as a rescuer)
    run = race.run
    A = run.As[int(run.order[race.pos])]
    t = time.perf_counter()
    proj = race.strategies["direct-reuse"].projected_factor_seconds(A)
    race.spent.append((time.perf_counter() - t, False))  # the projection is probe waste
    limit = DIRECT_PROJECTION_MARGIN * PROBE_BUDGET * race.cheapest
    if proj is None or proj <= limit:
        return False
    race.drop("direct-reuse", f"direct-reuse not probed (its first factorization, projected "
                              f"from two patches, {proj * 1e3:.3g} ms > {limit * 1e3:.3g} ms)")
    return True


class _Race:
    """Candidates, their measured steady per-system costs, and failures."""

    def __init__(self, run, strategies, rtol, allowance=np.inf, first_budget=None):
        self.run, self.strategies, self.rtol = run, strategies, rtol
        self.allowance = allowance  # x cheapest cost: seconds losing solves may take
        self.first_budget = first_budget  # seconds for an iterative solve before any finished
        self.spent: list = []  # (cost, completed) of every probe solve
        self.costs = {name: [] for name in strategies}
        self.alive = list(strategies)
        self.failed: list = []
        self.stopped: dict = {}  # name -> seconds spent when its probe solve was stopped
        self.errors: dict = {}  # name -> the exception that put it out
        self.switches: list = []
        self.pos = 0
        self.fallback = None
        self.rescuer = None  # who re-solved a failed or stopped system
        self.cheapest = np.inf  # cheapest single solve so far (first solves included)
        self.first: dict = {}  # name -> cost of its first (setup-paying) solve
        self.dropped: list = []  # why a candidate left the probe early

    def cheapest_other(self, name) -> float:
        """Cheapest single solve (setup included) of the other candidates."""
        vals = [v for k, v in self.first.items() if k != name]
        vals += [c for k, v in self.costs.items() if k != name for c in v]
        return min(vals) if vals else np.inf

    def drop(self, name, why):
        self.alive.remove(name)
        self.dropped.append(why)

    def estimate(self, name) -> float:
        c = self.costs[name]
        if not c:
            return np.inf
        if isinstance(self.strategies.get(name), RecycleStrategy):
            # a carried space gets better as it fills (elasticity3d: 84, 31, 27
            # iterations on its first solves): its latest cost is the estimate
            return float(np.median(c[-3:])) if len(c) >= 3 else float(c[-1])
        return float(np.median(c[-8:]))

    def best(self, exclude=None):
        names = [k for k in self.alive if k != exclude and self.costs[k]]
        if not names:
            if exclude is not None:
                return None
            if "direct-reuse" not in self.alive:  # never there, failed or dropped
                if "direct-reuse" not in self.strategies or "direct-reuse" in self.failed:
                    self.strategies["direct-reuse"] = LUStrategy(reuse=True, rtol=self.rtol)
                self.costs.setdefault("direct-reuse", [])
                self.alive.append("direct-reuse")
            # nothing measured yet: the safe choice (a direct solve) rescues
            return "direct-reuse" if "direct-reuse" in self.alive else self.alive[0]
        return min(names, key=self.estimate)

    def left(self) -> float:
        """Seconds of the probe's allowance not yet spent on losing solves.

        A completed solve costs its excess over the cheapest per-system cost (the
        system had to be solved anyway), a stopped or failed one all of its time.
        """
        if not np.isfinite(self.cheapest):
            return np.inf
        c = self.cheapest
        waste = sum(max(t - c, 0.0) if done else t for t, done in self.spent)
        return max(self.allowance * c, PROBE_MIN_ALLOWANCE_S) - waste

    def _leads(self, name) -> bool:
        """``name`` is the best measured candidate or made the cheapest solve so far."""
        return (bool(self.costs[name]) and name == self.best()) or \
            self.first.get(name, np.inf) <= self.cheapest

    def affordable(self, name) -> bool:
        """Whether a solve by ``name`` fits in what is left of the allowance: always for
        the current best; a tried candidate needs room for the excess of its first solve
        over the cheapest (zero for the cheapest one, whose second, timed solve is free);
        an untried iterative rival needs room for two cheapest solves
        (its preconditioner set-up is not budgeted; its iterations are cut to what is
        left), a direct one (which cannot be stopped) for PROBE_BUDGET of them."""
        if not np.isfinite(self.cheapest) or self._leads(name):
            return True
        if name in self.first:  # tried: its next solve wastes about its excess cost
            return self.left() >= self.first[name] - self.cheapest
        need = 2.0 if self.strategies[name].iterative else PROBE_BUDGET
        return self.left() >= need * self.cheapest

    def _budget(self, name):
        """Seconds after which a solve by ``name`` is stopped, or None (no rival to take
        over: the only candidate left runs unbudgeted)."""
        others = [k for k in self.alive if k != name]
        if not others or not self.strategies[name].iterative:
            return None
        if not np.isfinite(self.cheapest):  # nothing finished yet: a mat-vec count
            return None if self.first_budget is None else max(self.first_budget,
                                                              PROBE_MIN_BUDGET_S)
        budget = max(PROBE_BUDGET * self.cheapest, PROBE_MIN_BUDGET_S)
        if not self._leads(name):
            budget = min(budget, max(self.left(), PROBE_MIN_BUDGET_S))
        return budget

    def attempt(self, name, *, record_cost=True, budgeted=True):
        """Solve the next position with ``name``; a failure is re-solved by the cheapest
        other candidate (or a sparse LU)."""
        budget = self._budget(name) if budgeted else None
        status, cost, dt, error = _probe_one(self.run, self.strategies[name], self.pos, budget)
        if budgeted:
            self.spent.append((cost, status == "ok"))
        if status == "ok":
            self.first.setdefault(name, cost)
            self.cheapest = min(self.cheapest, cost)
            if record_cost:
                self.costs[name].append(cost)
        else:
            self.alive.remove(name)
            if status == "stopped":
                self.stopped[name] = cost
            else:
                self.failed.append(name)
                if error:
                    self.errors[name] = error
            rescuer = self.best()
            if rescuer in self.alive:
                self.rescuer = rescuer
                status2, cost2, _, _ = _probe_one(self.run, self.strategies[rescuer], self.pos)
                if status2 == "ok":
                    self.costs[rescuer].append(cost2)
                    self.cheapest = min(self.cheapest, cost2)
                    self.run.times[int(self.run.order[self.pos])] += dt
                    self.pos += 1
                    return
                self.alive.remove(rescuer)
                self.failed.append(rescuer)
            self.rescuer = "sparse LU"
            self.fallback = self.fallback or LUStrategy(reuse=True, rtol=self.rtol)
            self.run.solve(self.fallback, self.pos)
            self.run.times[int(self.run.order[self.pos])] += dt
        self.pos += 1


def _matvec_seconds(A, repeats: int = 3) -> float:
    """Seconds of one ``A @ x`` (the best of ``repeats``)."""
    x = np.ones(A.shape[1])
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        A @ x
        best = min(best, time.perf_counter() - t0)
    return best


class _OverBudget(Exception):
    """Raised from a solver callback to stop a probe solve that cannot win."""


def _probe_one(run, strategy, pos, budget=None):
    """Solve position ``pos`` with ``strategy``; record it only if it converged.

    Returns ``(status, cost, wall, error)`` with status ``"ok"``, ``"failed"`` (did
    not reach rtol, or an iterative candidate raised ``error``) or ``"stopped"``
    (its iterations, from the first callback on, cost more than ``budget``
    seconds: the solver's callback stops it).
    """
    i = int(run.order[pos])
    A, b = run.As[i], run.bs[i]
    t0, c0 = time.perf_counter(), time.process_time()

    def cost_now():
        # other processes on the machine inflate wall time, threads inflate CPU time:
        # the smaller of the two is the more faithful estimate of the uncontended cost
        return min(time.perf_counter() - t0, time.process_time() - c0)

    solver = getattr(strategy, "solver", None)
    hook = getattr(strategy, "per_iteration_hook", False)
    saved = getattr(solver, "callback", None)
    if hook:
        solver = None  # the strategy's own per-iteration hook carries the budget check
    if budget is not None and hook:
        started_h = []

        def check_h(_args):
            if not started_h:
                started_h.append(cost_now())
            elif cost_now() - started_h[0] > budget:
                raise _OverBudget

        strategy.on_iteration = check_h
    if budget is not None and solver is not None:
        # the budget counts iterations only: the first solve's preconditioner setup
        # (an AMG hierarchy) is paid once and amortised by later systems
        started = []

        def check(_x):
            if not started:
                started.append(cost_now())
            elif cost_now() - started[0] > budget:
                raise _OverBudget
            if saved is not None:
                saved(_x)

        solver.callback = check
    try:
        x0 = run.initial_guess(i, strategy)
        x, stats = strategy.solve(A, b, x0)
    except _OverBudget:
        return "stopped", cost_now(), time.perf_counter() - t0, None
    except (InputError, ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        if not strategy.iterative:  # e.g. a singular matrix: the caller's problem
            raise
        # an iterative candidate whose preconditioner setup broke down (an AMG setup on a
        # nonsymmetric matrix): the candidate is out, the system goes to another one
        return "failed", cost_now(), time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
    finally:
        if solver is not None:
            solver.callback = saved
        if hook:
            strategy.on_iteration = None
    dt = time.perf_counter() - t0
    cost = cost_now()
    bn = float(np.linalg.norm(b))
    rn = float(np.linalg.norm(b - A @ x))
    res = rn / bn if bn > 0 else rn
    if not (res <= run.rtol):
        return "failed", cost, dt, None
    run._record(i, pos, x, stats, dt, A, b, residual=res)
    return "ok", cost, dt, None
