"""FE² macro solver with pluggable micro models (issue 5, part B)."""

import json
from pathlib import Path

import numpy as np
import pytest
import skfem
import torch
from skfem.models.elasticity import linear_elasticity

from femno.cli.main import main
from femno.errors import ConvergenceError, InputError
from femno.multiscale.fe2 import run_fe2
from femno.multiscale.macro import cook_membrane, l_profile, macro_problem, solve_macro
from femno.multiscale.materials import MATRIX, LinearElastic
from femno.multiscale.micro import (
    ClosedFormMicro,
    EquiNOMicro,
    FERVEMicro,
    MicroModel,
    micro_from_spec,
)

torch.set_num_threads(1)
K, G = 4780.0, 50.0 / 0.12  # the "linear" micro model: matrix small-strain moduli


def _direct_linear(problem, lam, mu):
    """Independent path: scikit-fem's linear elasticity form, one sparse solve."""
    A = linear_elasticity(lam, mu).assemble(problem.basis)
    return skfem.solve(*skfem.condense(A, problem.f_ext, D=problem.fixed))


@pytest.mark.parametrize("make,cell", [(cook_membrane, "quad"), (cook_membrane, "tri"),
                                       (l_profile, "quad")])
def test_linear_micro_matches_direct_skfem_solve(make, cell):
    problem = make(6, cell=cell, load=40.0)
    res = solve_macro(problem, micro_from_spec("linear"), steps=3)
    assert res.iterations == [1, 1, 1]  # linear: one Newton correction per step
    u_ref = _direct_linear(problem, K - 2.0 * G / 3.0, G)
    assert np.linalg.norm(res.u - u_ref) <= 1e-10 * np.linalg.norm(u_ref)
    # equilibrium: clamp reaction = applied load, linear curve
    np.testing.assert_allclose(res.reaction, res.force, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.displacement, np.asarray(res.load_factor) * u_ref[problem.ref_dof],
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cell", ["quad", "tri"])
def test_macro_tangent_matches_finite_differences(cell):
    problem = cook_membrane(3, cell=cell)
    rng = np.random.default_rng(0)
    u = 0.3 * rng.standard_normal(problem.n_dofs)  # strains of a few percent
    v = rng.standard_normal(problem.n_dofs)

    def f_int(x):
        return problem.internal_force(MATRIX.stress_and_tangent(problem.strains(x))[0])

    Kmat = problem.stiffness(MATRIX.stress_and_tangent(problem.strains(u))[1])
    h = 1e-6
    fd = (f_int(u + h * v) - f_int(u - h * v)) / (2 * h)
    assert np.linalg.norm(Kmat @ v - fd) <= 1e-7 * np.linalg.norm(fd)
    assert np.abs(problem.strains(u)).max() > 0.01  # really in the nonlinear range


def test_newton_converges_quadratically_with_matrix_law():
    res = run_fe2("cook", "matrix", steps=2, n=4, load=40.0, rtol=1e-12)
    for hist in res.residuals:
        r = np.asarray(hist) / hist[0]
        assert len(r) <= 6
        # e_{k+1} / e_k^2 bounded while e_k^2 is above round-off (measured ~0.01)
        ratios = [r[k + 1] / r[k] ** 2 for k in range(len(r) - 1) if r[k] > 1e-6]
        assert len(ratios) >= 3
        assert max(ratios[1:]) < 0.1, ratios
        assert r[-1] < 1e-12


def test_load_stepping_curve_softens_monotonically():
    res = run_fe2("lprofile", "matrix", steps=5, n=4, load=40.0)
    d = np.abs(res.displacement)
    f = np.abs(res.reaction)
    assert np.all(np.diff(d) > 0) and np.all(np.diff(f) > 0)
    secant = f[1:] / d[1:]
    assert np.all(np.diff(secant) < 0)  # softening matrix law: the secant stiffness drops
    lin = run_fe2("lprofile", "linear", steps=5, n=4, load=40.0)
    s_lin = np.abs(lin.reaction[1:]) / np.abs(lin.displacement[1:])
    np.testing.assert_allclose(s_lin, s_lin[0], rtol=1e-9)
    assert secant[0] < s_lin[0] * 1.001  # and never stiffer than its small-strain tangent


class _FlakyMicro(MicroModel):
    """Linear law that fails (like a non-converged RVE) above a strain level."""

    def __init__(self, limit, *, once):
        super().__init__()
        self.law, self.limit, self.once, self.failed = LinearElastic(K, G), limit, once, 0

    def _evaluate(self, eps):
        if np.abs(eps).max() > self.limit and (not self.once or self.failed == 0):
            self.failed += 1
            raise ConvergenceError("RVE Newton did not converge (test)")
        return self.law.stress_and_tangent(eps)


def test_step_cutback_and_clear_failure():
    problem = cook_membrane(3, load=40.0)
    ref = solve_macro(problem, micro_from_spec("linear"), steps=1)
    limit = 0.6 * np.abs(ref.strain).max()
    res = solve_macro(problem, _FlakyMicro(limit, once=True), steps=1)
    assert res.cutbacks == 1 and res.load_factor[-1] == 1.0
    np.testing.assert_allclose(res.u, ref.u, rtol=1e-10, atol=1e-14)
    with pytest.raises(ConvergenceError, match="last converged load factor"):
        solve_macro(problem, _FlakyMicro(limit, once=False), steps=2, max_cutbacks=2)


@pytest.mark.parametrize("call", [
    lambda: macro_problem("beam"),
    lambda: micro_from_spec("plastic"),
    lambda: micro_from_spec("equino:"),
    lambda: micro_from_spec("equino:/no/such/model.pt"),
    lambda: run_fe2("cook", "linear", steps=0),
    lambda: run_fe2("cook", "linear", steps=-3),
    lambda: run_fe2("cook", "linear", load=float("nan")),
    lambda: cook_membrane(0),
    lambda: cook_membrane(2, cell="hex"),
    lambda: micro_from_spec("linear").stress_and_tangent([[0.0, np.nan, 0.0]]),
    lambda: micro_from_spec("linear").stress_and_tangent(np.zeros((2, 4))),
    lambda: FERVEMicro("RVE1", workers=0),
    lambda: FERVEMicro(str(Path("/no/such/rve")), workers=2),
    lambda: ClosedFormMicro(object()),
])
def test_bad_input_raises_input_error(call):
    with pytest.raises(InputError):
        call()


def test_cli_fe2_json(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["fe2", "--macro", "cook", "--micro", "linear", "--steps", "2", "--n", "2",
                 "--json", "--quiet", "--out", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["iterations"] == [1, 1] and len(data["residuals"]) == 2
    assert data["load_factor"] == [0.0, 0.5, 1.0]
    assert data["micro_s"] >= 0 and data["macro_s"] >= 0
    assert json.loads(out.read_text())["displacement"] == data["displacement"]
    assert main(["fe2", "--macro", "cook", "--micro", "nope", "--quiet"]) == 2


class _TorchLinear(torch.nn.Module):
    """Stand-in of an EquiNO model: torch in, torch out, AD tangent."""

    def stress_and_tangent(self, strains):
        C = torch.as_tensor(LinearElastic(K, G).tangent())
        e = torch.as_tensor(strains)
        return e @ C.T, C.expand(len(e), 3, 3)


def test_equino_micro_wraps_torch_models():
    micro = EquiNOMicro(_TorchLinear())
    eps = np.random.default_rng(1).uniform(-0.04, 0.04, (5, 3))
    s, C = micro.stress_and_tangent(eps)
    s_ref, C_ref = micro_from_spec("linear").stress_and_tangent(eps)
    assert s.dtype == np.float64 and C.shape == (5, 3, 3)
    np.testing.assert_allclose(s, s_ref, rtol=1e-14)
    np.testing.assert_allclose(C, C_ref, rtol=1e-14)


def _tiny_rve(prefix):
    """A 2-layer laminate RVE (8-node quads) written as ``prefix.{nodes,elems}.csv``, so
    that worker processes can load it by name."""
    from femno.multiscale.rve_assembly import laminate_rve

    rve = laminate_rve([0.4, 0.6], nx=2, ny=2)
    np.savetxt(f"{prefix}.nodes.csv", rve.nodes, delimiter=",")
    ids = np.arange(1, rve.n_elements + 1)
    np.savetxt(f"{prefix}.elems.csv", np.column_stack([ids, rve.material, rve.elements + 1]),
               delimiter=",", fmt="%d")
    return str(prefix)


def test_fe_rve_micro_parallel_equals_serial(tmp_path):
    pytest.importorskip("femno.multiscale.rve_solver")
    from femno.multiscale.rve_solver import RVESolver

    rve = _tiny_rve(tmp_path / "tiny")
    eps = np.random.default_rng(2).uniform(-0.03, 0.03, (5, 3))
    s_ref, C_ref = RVESolver(rve, tol=1e-12).stress_and_tangent(eps)
    with FERVEMicro(rve, workers=1, tol=1e-12) as serial:
        s1, C1 = serial.stress_and_tangent(eps)
    with FERVEMicro(rve, workers=2, tol=1e-12) as par:
        s2, C2 = par.stress_and_tangent(eps)
        s3, _ = par.stress_and_tangent(eps[::-1])  # pool reused, points re-assigned
        assert par.evaluations == 10
    np.testing.assert_allclose(s1, s_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(C1, C_ref, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(C2, C1, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(s3, s1[::-1], rtol=1e-10, atol=1e-10)


def test_fe2_with_fe_rve_micro_on_tiny_problem(tmp_path):
    pytest.importorskip("femno.multiscale.rve_solver")
    rve = _tiny_rve(tmp_path / "tiny")
    res = run_fe2("cook", "fe", rve=rve, workers=1, steps=2, n=1, load=200.0, rtol=1e-9)
    assert res.load_factor[-1] == 1.0 and max(res.iterations) <= 6
    np.testing.assert_allclose(res.reaction[-1], 200.0, rtol=1e-8)
    assert res.micro["name"] == "fe" and res.micro_s > 0


def test_fe_rve_micro_on_dask_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("femno.multiscale.rve_solver")
    rve = _tiny_rve(tmp_path / "tiny")
    eps = np.random.default_rng(3).uniform(-0.02, 0.02, (3, 3))
    with FERVEMicro(rve, workers=1, tol=1e-12) as serial:
        s1, C1 = serial.stress_and_tangent(eps)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None) as client:
        with FERVEMicro(rve, scheduler=client, tol=1e-12) as micro:
            s2, C2 = micro.stress_and_tangent(eps)
    np.testing.assert_allclose(s2, s1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(C2, C1, rtol=1e-12, atol=1e-9)


def test_demo_runs(tmp_path):
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    demo = Path(__file__).resolve().parents[1] / "demos" / "fe2_cook.py"
    out = tmp_path / "cook.png"
    proc = subprocess.run([sys.executable, str(demo), "--n", "4", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Newton residuals" in proc.stdout and out.stat().st_size > 10_000


def test_fe_micro_warm_starts_each_point_from_its_last_fluctuation(tmp_path, monkeypatch):
    rs = pytest.importorskip("femno.multiscale.rve_solver")
    import femno.multiscale.micro as micro_mod

    calls = []

    class WarmSolver(rs.RVESolver):  # an RVE solver that accepts an initial fluctuation
        def solve(self, strain, *, tangent=True, u0=None):
            res = super().solve(strain, tangent=tangent)
            calls.append((None if u0 is None else np.array(u0), res.fluctuation.copy()))
            return res

    monkeypatch.setattr(rs, "RVESolver", WarmSolver)
    monkeypatch.setattr(micro_mod, "_SOLVERS", {})
    rve = _tiny_rve(tmp_path / "tiny")
    eps = np.random.default_rng(4).uniform(-0.02, 0.02, (3, 3))
    with FERVEMicro(rve, workers=1) as micro:
        micro.stress_and_tangent(eps)
        micro.stress_and_tangent(1.1 * eps)
    assert [c[0] is None for c in calls] == [True] * 3 + [False] * 3
    for k in range(3):  # point k restarts from the fluctuation it converged to before
        np.testing.assert_array_equal(calls[3 + k][0], calls[k][1])
    assert not any(key[0] == micro._token for key in micro_mod._STATES)  # freed on close


def test_benchmark_script_runs_and_compares(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fe2.py"
    spec = importlib.util.spec_from_file_location("bench_fe2", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rep = bench.main(["--reference", "matrix", "--surrogate", "matrix", "--n", "2", "--steps", "2",
                      "--load", "30", "--out", str(tmp_path)])
    c = rep["comparison"]  # the same model on both sides: no difference
    assert c["force_displacement_max_rel_pct"] == 0.0 and c["stress_field_rel_l2_pct"] == 0.0
    assert (tmp_path / "fe2.md").read_text().startswith("# FE² benchmark")
    assert json.loads((tmp_path / "fe2.json").read_text())["reference"]["iterations"] == [3, 3]


def test_cutback_substeps_land_on_nominal_load_levels():
    problem = cook_membrane(3, load=40.0)
    ref = solve_macro(problem, micro_from_spec("linear"), steps=4)
    limit = 0.5 * np.abs(ref.strain).max()  # the step to load factor 0.75 fails once
    res = solve_macro(problem, _FlakyMicro(limit, once=True), steps=4)
    assert res.cutbacks == 1
    assert {0.25, 0.5, 0.75, 1.0} <= {round(x, 12) for x in res.load_factor}
    np.testing.assert_allclose(res.u, ref.u, rtol=1e-10, atol=1e-14)
