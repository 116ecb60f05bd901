"""Trajectory datasets (issue 20): the θ-scheme's order, the energy balance, the store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from femno.datagen import generate_trajectory as gt
from femno.datagen.store import DatasetStore, inspect_dataset
from femno.datagen.trajectory import _energy_defect, solve_trajectory
from femno.errors import InputError
from femno.fem.families import get_family


@pytest.fixture(scope="module")
def heat():
    fam = get_family("heat", n=12)
    return fam, fam.sample(np.random.default_rng(4))


@pytest.mark.parametrize("theta, order", [(1.0, 1.0), (0.5, 2.0)])
def test_time_convergence_rate(heat, theta, order):
    """Error at t = 0.08 against a fine Crank-Nicolson run halves (theta 1) or quarters (1/2)."""
    fam, params = heat
    T = 0.08
    ref = solve_trajectory(fam, params, steps=512, dt=T / 512, theta=0.5).u[-1]
    errs = [np.linalg.norm(solve_trajectory(fam, params, steps=s, dt=T / s, theta=theta).u[-1] - ref)
            for s in (8, 16, 32)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    # at least the scheme's order, and implicit Euler no better than first order (measured
    # on this sample: Crank-Nicolson 1.98 then 3.6; the faster second rate is not explained)
    assert np.all(rates > order - 0.25), rates
    if order == 1.0:
        assert np.all(rates < 1.25), rates


def test_reuse_equals_the_naive_loop_and_balances_energy(heat):
    fam, params = heat
    a = solve_trajectory(fam, params, steps=6, dt=0.02, theta=0.5, method="reuse")
    b = solve_trajectory(fam, params, steps=6, dt=0.02, theta=0.5, method="naive")
    assert np.allclose(a.u, b.u, rtol=0, atol=1e-12 * np.abs(a.u).max())
    assert a.residuals.max() < 1e-12 and np.abs(a.energy_residual).max() < 1e-12
    assert np.array_equal(a.u[0][fam.free_dofs()], fam._u_prev(params)[fam.free_dofs()])
    assert np.all(a.u[:, np.setdiff1d(np.arange(fam.basis.N), fam.free_dofs())] == 0.0)


def test_energy_defect_sees_a_wrong_step(heat):
    fam, params = heat
    M, K, F = fam.operators(params)
    free = fam.free_dofs()
    Mf, Kf, Ff = M[free][:, free], K[free][:, free], F[free]
    tr = solve_trajectory(fam, params, steps=2, dt=0.01)
    x, xn = tr.u[0, free], tr.u[1, free]
    assert abs(_energy_defect(Mf, Kf, Ff, x, xn, 0.01, 1.0)) < 1e-12
    assert abs(_energy_defect(Mf, Kf, Ff, x, xn, 0.02, 1.0)) > 1e-3  # wrong time step
    assert abs(_energy_defect(Mf, Kf, Ff, x, xn, 0.01, 0.5)) > 1e-3  # wrong scheme


def test_bad_input_is_refused(heat, tmp_path):
    fam, params = heat
    with pytest.raises(InputError, match="theta"):
        solve_trajectory(fam, params, steps=2, theta=0.3)
    with pytest.raises(InputError, match="steps"):
        solve_trajectory(fam, params, steps=0)
    with pytest.raises(InputError, match="dt"):
        solve_trajectory(fam, params, steps=2, dt=-1.0)
    with pytest.raises(InputError, match="time-dependent"):
        gt.generate_trajectories("darcy", samples=1, steps=2, out=tmp_path / "d",
                                 family_options={"n": 4}, progress=False)


def _gen(out, **kw):
    args = dict(samples=5, steps=4, out=out, block=2, family_options={"n": 6}, progress=False)
    return gt.generate_trajectories("heat", **{**args, **kw})


def test_store_is_deterministic_resumable_and_identified(tmp_path):
    s = _gen(tmp_path / "a")
    assert s["done"] == 5 and s["failures"] == 0 and s["max_energy_residual"] < 1e-12
    root = DatasetStore.open(tmp_path / "a").root
    U = root["solution"][:]
    assert U.shape == (5, 5, 49) and np.allclose(root["times"][:], 0.01 * np.arange(5))
    assert root["stats/residual"].shape == (5, 4)
    _gen(tmp_path / "b")
    assert np.array_equal(DatasetStore.open(tmp_path / "b").root["solution"][:], U)
    # a killed run: block 1's marker is lost -> only block 1 is recomputed, bit-identical
    (tmp_path / "a" / "done" / "block-000001.json").unlink()
    again = _gen(tmp_path / "a")
    assert again["done"] == 2 and again["message"] == "resumed"
    assert np.array_equal(DatasetStore.open(tmp_path / "a").root["solution"][:], U)
    assert _gen(tmp_path / "a")["done"] == 0
    with pytest.raises(InputError, match="theta"):
        _gen(tmp_path / "a", theta=0.5)
    # every sample is sample_index[row]'s trajectory from seed [0, i]
    fam = get_family("heat", n=6)
    from femno.datagen.runner import sample_params

    tr = solve_trajectory(fam, sample_params(fam, 0, 3), steps=4)
    assert np.array_equal(U[3], tr.u)


def test_inspect_flags_a_sample_with_a_bad_energy_balance(tmp_path, monkeypatch):
    real = gt.solve_trajectory

    def corrupt(fam, params, **kw):
        tr = real(fam, params, **kw)
        if corrupt.calls == 2:
            tr.energy_residual[1] = 0.3
        corrupt.calls += 1
        return tr

    corrupt.calls = 0
    monkeypatch.setattr(gt, "solve_trajectory", corrupt)
    _gen(tmp_path / "c")
    info = inspect_dataset(tmp_path / "c")
    assert info["stats"]["flagged_samples"] == [2]
    assert info["stats"]["max_energy_residual"] == pytest.approx(0.3)
    assert info["layout"]["trajectory"]["axes"] == ["sample", "time", "dof"]


def test_cli_steps_mode(tmp_path, capsys):
    from femno.cli.main import main

    rc = main(["generate", "heat", "--n", "6", "--samples", "2", "--steps", "3", "--theta", "0.5",
               "--block", "1", "--out", str(tmp_path / "t"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["done"] == 2 and out["steps"] == 3
    assert DatasetStore.open(tmp_path / "t").manifest["settings"]["theta"] == 0.5


def test_torch_dataset_streams_trajectories(tmp_path):
    torch = pytest.importorskip("torch")
    from femno.datagen.torch_dataset import FemnoDataset

    _gen(tmp_path / "d")
    ds = FemnoDataset(tmp_path / "d", inputs=["u_prev"], dtype=torch.float64)
    x, y = ds[3]
    U = DatasetStore.open(tmp_path / "d").root["solution"][3]
    assert len(ds) == 5 and tuple(y.shape) == (5, 49)
    assert np.array_equal(y.numpy(), U)  # row 3 = time series [time, dof] of sample 3
    assert np.allclose(y.numpy()[0][ds.free], x.numpy().ravel()[ds.free])  # u(t=0) = u_prev


def test_advection_diffusion_trajectory_is_nonsymmetric_and_balanced():
    fam = get_family("advection-diffusion", n=12, wind=8.0)
    params = fam.sample(np.random.default_rng(1))
    assert np.isclose(np.linalg.norm(params["wind"]), 8.0)
    a = solve_trajectory(fam, params, steps=5, dt=0.01, theta=0.5, method="reuse")
    b = solve_trajectory(fam, params, steps=5, dt=0.01, theta=0.5, method="naive")
    assert np.allclose(a.u, b.u, rtol=0, atol=1e-12 * np.abs(a.u).max())
    assert a.residuals.max() < 1e-12 and np.abs(a.energy_residual).max() < 1e-12
    # the wind moves the solution: without it the trajectory differs
    c = solve_trajectory(fam, {**params, "wind": np.zeros(2)}, steps=5, dt=0.01, theta=0.5)
    assert np.abs(c.u[-1] - a.u[-1]).max() > 1e-3 * np.abs(a.u[-1]).max()


def test_advection_diffusion_steady_step_fast_assembly_matches_scikit_fem():
    fam = get_family("advection-diffusion", n=10)
    p = fam.sample(np.random.default_rng(2))
    fast, full = fam.assemble(p), fam.assemble(p, fast=False)
    assert abs(fast.A - full.A).max() <= 1e-12 * abs(full.A).max()
    assert abs(fast.A - fast.A.T).max() > 1e-6  # nonsymmetric
    assert np.allclose(fast.b, full.b)


def test_wave_newmark_conserves_energy_and_converges_second_order():
    fam = get_family("wave", n=12, f=2.0)
    params = fam.sample(np.random.default_rng(3))
    a = solve_trajectory(fam, params, steps=40, dt=0.01, method="reuse")
    b = solve_trajectory(fam, params, steps=40, dt=0.01, method="naive")
    assert np.allclose(a.u, b.u, rtol=0, atol=1e-12 * np.abs(a.u).max())
    assert a.residuals.max() < 1e-12 and np.abs(a.energy_residual).max() < 1e-12
    assert np.abs(a.u[-1] - a.u[0]).max() > 0.1 * np.abs(a.u[0]).max()  # it does move
    # max over the common times (at a single time the oscillating error is not monotone);
    # measured rates 1.85, 1.98 (and 1.30 from 20 steps: pre-asymptotic)
    T, R = 0.2, 1280
    ref = solve_trajectory(fam, params, steps=R, dt=T / R).u
    errs = [np.abs(solve_trajectory(fam, params, steps=s, dt=T / s).u - ref[::R // s]).max()
            for s in (40, 80, 160)]
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert rates.min() > 1.7 and abs(rates[-1] - 2.0) < 0.2, rates


def test_allen_cahn_newton_dissipates_energy_and_chord_reuse_matches_newton():
    from femno.datagen import trajectory as tmod

    fam = get_family("allen-cahn", n=16)
    params = fam.sample(np.random.default_rng(5))
    assert np.abs(params["u_prev"]).max() < 1.0
    a = solve_trajectory(fam, params, steps=15, dt=0.02, method="reuse")
    b = solve_trajectory(fam, params, steps=15, dt=0.02, method="naive")
    assert a.residuals.max() <= tmod.NEWTON_RTOL and b.residuals.max() <= tmod.NEWTON_RTOL
    assert np.abs(a.u - b.u).max() < 1e-8 * np.abs(b.u).max()
    assert a.factorizations < 15  # one factorization serves several steps
    assert a.energy_residual.max() == 0.0 and b.energy_residual.max() == 0.0
    E = []
    for x in a.u:  # the free energy decreases along the trajectory (gradient flow)
        N, _, well = fam.nonlinear_terms(x, jacobian=False)
        E.append(well + 0.5 * x @ (fam.operators(params)[1] @ x))
    assert np.all(np.diff(E) < 0)
    with pytest.raises(InputError, match="dt < 1"):
        get_family("allen-cahn", n=4, dt=1.5)


def test_a_user_family_with_operators_gets_trajectories(tmp_path):
    """The module:Name hook: any Family with operators(params) and params['u_prev']."""
    src = tmp_path / "myheat.py"
    src.write_text('''
import numpy as np
import skfem
from skfem.models.poisson import laplace, mass
from femno.fem.families.base import Family


class Cooling(Family):
    name = "cooling"
    OPTIONS = {"dt": 0.01}
    spd = symmetric = True

    def sample(self, rng):
        x, y = self.basis.doflocs
        return {"u_prev": rng.uniform(0.5, 2.0) * np.sin(np.pi * x) * np.sin(np.pi * y)}

    def operators(self, params):
        return (mass.assemble(self.basis).tocsr(), laplace.assemble(self.basis).tocsr(),
                np.zeros(self.basis.N))

    def assemble_full(self, params, *, matrix=True):
        M, K, F = self.operators(params)
        A = (M + self.options["dt"] * K) if matrix else None
        return A, M @ params["u_prev"]

    def features(self, params):
        return np.array([params["u_prev"].max()])
''')
    s = gt.generate_trajectories(f"{src}:Cooling", samples=2, steps=8, out=tmp_path / "c",
                                 family_options={"n": 8}, progress=False)
    assert s["done"] == 2 and s["failures"] == 0 and s["max_energy_residual"] < 1e-12
    U = DatasetStore.open(tmp_path / "c").root["solution"][:]
    # the first sine mode decays at a rate close to 2 pi^2 (measured 18.65-18.66 per unit time:
    # implicit Euler and P1 on 8 x 8; the interpolated sine is not exactly a discrete eigenvector)
    decay = np.log(U[:, 1:].max(axis=2) / U[:, :-1].max(axis=2)) / -0.01
    assert np.allclose(decay, decay[0, 0], rtol=2e-3) and abs(decay[0, 0] / (2 * np.pi**2) - 1) < 0.1


@pytest.mark.parametrize("name", ["heat", "advection-diffusion", "wave", "allen-cahn",
                                  "heat-varying"])
def test_every_time_family_runs_on_p2_and_unstructured_meshes(name):
    from femno.fem import unstructured_square

    for fam in (get_family(name, n=6, element="P2"),
                get_family(name, mesh=unstructured_square(8, seed=0))):
        tr = solve_trajectory(fam, fam.sample(np.random.default_rng(0)), steps=3, dt=0.01)
        assert tr.residuals.max() < 1e-9 and np.abs(tr.energy_residual).max() < 1e-12
        assert np.abs(tr.u[-1] - tr.u[0]).max() > 0  # something happened


@pytest.mark.parametrize("dim", [2, 3])
def test_allen_cahn_residual_kernel_is_scikit_fem_assembly(dim):
    """N(u) and the double-well energy by the cached quadrature kernel equal scikit-fem's
    form assembly to rounding; the Jacobian matches a finite difference of N."""
    import skfem

    from femno.fem.families.transient import _cubic, _double_well

    mesh = (skfem.MeshTri().refined(4) if dim == 2
            else skfem.MeshTet.init_tensor(*[np.linspace(0, 1, 7)] * 3))
    fam = get_family("allen-cahn", mesh=mesh)
    u = np.random.default_rng(dim).uniform(-1.2, 1.2, fam.basis.N)
    N, J, E = fam.nonlinear_terms(u)
    ui = fam.basis.interpolate(u)
    ref = _cubic.assemble(fam.basis, u=ui)
    assert np.abs(N - ref).max() <= 1e-14 * np.abs(ref).max()
    assert abs(E - _double_well.assemble(fam.basis, u=ui)) <= 1e-14 * abs(E)
    d = np.random.default_rng(9).standard_normal(fam.basis.N)
    h = 1e-6
    fd = (fam.nonlinear_terms(u + h * d, jacobian=False)[0]
          - fam.nonlinear_terms(u - h * d, jacobian=False)[0]) / (2 * h)
    assert np.abs(fd - J @ d).max() <= 1e-7 * np.abs(J @ d).max()
