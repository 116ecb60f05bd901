"""Smoke test of benchmarks/bench_precond_suite.py on two small matrices of its suite."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_precond_suite as bench  # noqa: E402

HAVE_ILUPP = importlib.util.find_spec("ilupp") is not None


def test_suite_sa_and_ic_converge_and_sa_beats_ic_on_darcy():
    cases = bench.suite("small", only=["airfoil", "darcy-unstructured"])
    assert [c.name for c in cases] == ["airfoil", "darcy-unstructured"]
    for c in cases:
        assert c.A.shape == (c.dofs, c.dofs) and c.b.shape == (c.dofs,)
    wanted = {"SA-AMG", "IC(0)"} if HAVE_ILUPP else {"SA-AMG"}
    methods = [m for m in bench.competitors() if m[0] in wanted]
    assert {m[0] for m in methods} == wanted
    rows = bench.run_suite(cases, methods, log=None, warm=False)
    assert len(rows) == len(cases) * len(methods)
    for r in rows:
        assert r["converged"], r
        assert r["residual"] <= 1e-8
        assert r["iterations"] > 0 and r["cpu"] > 0 and r["setup"] >= 0
    darcy = {r["method"]: r for r in rows if r["matrix"] == "darcy-unstructured"}
    assert darcy["SA-AMG"]["ratio_total"] == pytest.approx(1.0)
    if HAVE_ILUPP:
        assert darcy["SA-AMG"]["iterations"] < darcy["IC(0)"]["iterations"]


def test_a_missed_tolerance_is_reported_not_converged():
    case = bench.suite("small", only=["darcy-unstructured"])[0]
    run = bench._krylov_run("amg-sa", maxiter=2)
    rows = bench.run_suite([case], [("SA-AMG", run)], log=None, warm=False)
    assert not rows[0]["converged"] and rows[0]["residual"] > 1e-8
    assert rows[0]["ratio_total"] is None
