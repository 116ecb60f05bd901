"""Periodic RVE solver and material laws: FD tangents, periodicity, bounds, laminate, Newton."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from femno.errors import InputError
from femno.fem.rve import RVEMesh
from femno.multiscale.materials import FIBRE, MATRIX, LinearElastic
from femno.multiscale.rve_assembly import laminate_rve
from femno.multiscale.rve_solver import RVESolver


def fd_tangent(fn, e, h):
    cols = []
    for j in range(3):
        d = np.zeros(3)
        d[j] = h
        cols.append((fn(e + d) - fn(e - d)) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("law", [FIBRE, MATRIX], ids=["fibre", "matrix"])
def test_material_tangent_matches_finite_differences(law):
    rng = np.random.default_rng(0)
    e = rng.uniform(-0.04, 0.04, (6, 3))
    s, C = law.stress_and_tangent(e)
    Cfd = np.stack([fd_tangent(lambda x: law.stress_and_tangent(x[None])[0][0], ek, 1e-7)
                    for ek in e])
    assert np.abs(C - Cfd).max() <= 1e-6 * np.abs(C).max()
    import torch

    st = law.stress_torch(torch.as_tensor(e)).numpy()
    np.testing.assert_allclose(st, s, rtol=1e-12, atol=1e-9)


def test_material_laws_follow_spec():
    # pure shear gamma: fibre sigma_xy = G gamma; matrix small-strain shear modulus alpha/(2 beta)
    s, _ = FIBRE.stress_and_tangent(np.array([[0.0, 0.0, 1e-3]]))
    assert s[0, 2] == pytest.approx(FIBRE.G * 1e-3)
    _, C = MATRIX.stress_and_tangent(np.zeros((1, 3)))
    assert C[0, 2, 2] == pytest.approx(50.0 / 0.06 / 2)
    # volumetric (plane strain, eps_xx = eps_yy): sigma_xx = K tr + 2 G (e - tr/3)
    s, _ = MATRIX.stress_and_tangent(np.array([[0.01, 0.01, 0.0]]))
    d = 0.01 - 0.02 / 3
    n = np.sqrt(2 * d**2)
    assert s[0, 0] == pytest.approx(4780 * 0.02 + 50 * d / (0.06 + n))


@pytest.fixture(scope="module")
def small_rve(tmp_path_factory):
    """A 4x4-element periodic RVE with a stiff square inclusion (two materials, curved-free)."""
    rve = laminate_rve([1.0], nx=4, ny=4)
    c = rve.nodes[rve.elements[:, :4]].mean(axis=1)
    mat = np.where(np.all(np.abs(c) < 0.25, axis=1), 2, 1)
    return RVEMesh(nodes=rve.nodes, elements=rve.elements, material=mat, name="inclusion")


def test_macro_tangent_matches_finite_differences(small_rve):
    solver = RVESolver(small_rve, tol=1e-13)
    e = np.array([0.02, -0.01, 0.03])
    res = solver.solve(e)
    Cfd = fd_tangent(lambda x: solver.solve(x, tangent=False).stress, e, 1e-6)
    assert np.abs(res.tangent - Cfd).max() <= 1e-5 * np.abs(res.tangent).max()


def test_fluctuation_is_periodic_and_fixed(small_rve):
    solver = RVESolver(small_rve)
    res = solver.solve([0.03, 0.01, -0.02])
    px, py = small_rve.periodic_pairs()
    np.testing.assert_array_equal(res.fluctuation[px[:, 0]], res.fluctuation[px[:, 1]])
    np.testing.assert_array_equal(res.fluctuation[py[:, 0]], res.fluctuation[py[:, 1]])
    assert np.all(res.fluctuation[solver.fixed] == 0)
    assert np.abs(res.fluctuation).max() > 0
    # the homogenized stress is the mean of the ip stresses, the mean strain the macro strain
    w = solver.w.ravel()
    np.testing.assert_allclose(w @ res.strain_ip / solver.area, [0.03, 0.01, -0.02], atol=1e-12)


def test_zero_strain_tangent_between_reuss_and_voigt(small_rve):
    solver = RVESolver(small_rve)
    res = solver.solve(np.zeros(3))
    assert res.newton_iterations == 0
    C0 = {m: law.stress_and_tangent(np.zeros((1, 3)))[1][0] for m, law in solver.materials.items()}
    w = solver.w.ravel()
    frac = {m: w[solver.material_ip == m].sum() / solver.area for m in C0}
    voigt = sum(frac[m] * C0[m] for m in C0)
    reuss = np.linalg.inv(sum(frac[m] * np.linalg.inv(C0[m]) for m in C0))
    C = 0.5 * (res.tangent + res.tangent.T)
    assert np.linalg.eigvalsh(voigt - C).min() > -1e-8 * np.abs(voigt).max()
    assert np.linalg.eigvalsh(C - reuss).min() > -1e-8 * np.abs(voigt).max()
    assert not np.allclose(C, voigt) and not np.allclose(C, reuss)


def laminate_stiffness(Cs, f):
    """Closed-form effective stiffness of layers stacked along y (normal y)."""
    a, b = [0], [1, 2]
    inv_bb = [np.linalg.inv(C[np.ix_(b, b)]) for C in Cs]
    Sbb = sum(fi * ib for fi, ib in zip(f, inv_bb, strict=False))
    Sba = sum(fi * ib @ C[np.ix_(b, a)] for fi, ib, C in zip(f, inv_bb, Cs, strict=False))
    Caa = sum(fi * (C[np.ix_(a, a)] - C[np.ix_(a, b)] @ ib @ C[np.ix_(b, a)])
              for fi, ib, C in zip(f, inv_bb, Cs, strict=False))
    Cab = sum(fi * C[np.ix_(a, b)] @ ib for fi, ib, C in zip(f, inv_bb, Cs, strict=False))
    T = np.linalg.inv(Sbb)
    out = np.zeros((3, 3))
    out[np.ix_(b, b)], out[np.ix_(b, a)] = T, T @ Sba
    out[np.ix_(a, a)], out[np.ix_(a, b)] = Caa + Cab @ T @ Sba, Cab @ T
    return out


def test_laminate_matches_closed_form():
    m1, m2 = LinearElastic(1000.0, 300.0), LinearElastic(20000.0, 8000.0)
    f = np.array([0.3, 0.45, 0.25])
    rve = laminate_rve(f, nx=2, ny=2, materials=[1, 2, 1])
    solver = RVESolver(rve, materials={1: m1, 2: m2})
    res = solver.solve([0.01, 0.02, 0.03])
    ref = laminate_stiffness([m1.tangent(), m2.tangent(), m1.tangent()], f)
    np.testing.assert_allclose(res.tangent, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_allclose(res.stress, ref @ [0.01, 0.02, 0.03], rtol=1e-9)


def test_newton_converges_quadratically(small_rve):
    solver = RVESolver(small_rve, tol=1e-14)
    r = np.array(solver.solve([0.04, -0.03, 0.04], tangent=False).residual_norms)
    assert r[-1] <= 1e-10 * r[0]
    # once in the asymptotic range, r_{k+1} <= c r_k^2 with a moderate c
    k = [i for i in range(1, len(r) - 1) if r[i] < 1e-2 * r[0] and r[i + 1] > 1e-12 * r[0]]
    assert k, r
    for i in k:
        assert r[i + 1] / r[i] ** 2 * r[0] < 50.0, r


def test_reference_rve_and_pickle(small_rve):
    solver = RVESolver(small_rve)
    clone = pickle.loads(pickle.dumps(solver))
    s1, C1 = solver.stress_and_tangent(np.array([[0.01, 0.0, 0.0], [0.0, 0.0, 0.01]]))
    s2, C2 = clone.stress_and_tangent(np.array([[0.01, 0.0, 0.0], [0.0, 0.0, 0.01]]))
    np.testing.assert_allclose(s1, s2, rtol=1e-12)
    assert s1.shape == (2, 3) and C1.shape == (2, 3, 3)


def test_reference_rve3_solve():
    solver = RVESolver("RVE3")
    res = solver.solve([0.01, 0.0, 0.0])
    assert solver.area == pytest.approx(1.0, abs=1e-9)
    assert res.stress[0] > res.stress[1] > 0 and abs(res.stress[2]) < 0.01 * res.stress[0]
    assert np.all(np.linalg.eigvals(0.5 * (res.tangent + res.tangent.T)) > 0)


@pytest.mark.parametrize("strain", [[0.01, 0.0], [0.01, 0.0, 0.0, 0.0], [np.nan, 0.0, 0.0],
                                    [[0.01, 0, 0], [0, 0, 0]], ["a", 0, 0]])
def test_bad_strain(small_rve, strain):
    with pytest.raises(InputError):
        RVESolver(small_rve).solve(strain)


def test_non_periodic_mesh_is_rejected(small_rve):
    nodes = small_rve.nodes.copy()
    right = np.nonzero(np.isclose(nodes[:, 0], 0.5))[0]
    inner = right[np.abs(nodes[right, 1]) < 0.4]
    nodes[inner[0], 1] += 0.01
    bad = RVEMesh(nodes=nodes, elements=small_rve.elements, material=small_rve.material)
    with pytest.raises(InputError, match="not periodic"):
        RVESolver(bad)


def test_bad_mesh_files(tmp_path, small_rve):
    prefix = tmp_path / "m"
    np.savetxt(f"{prefix}.nodes.csv", small_rve.nodes, delimiter=",")
    elems = np.column_stack([np.arange(1, small_rve.n_elements + 1), small_rve.material,
                             small_rve.elements[:, :4] + 1])  # 4-node: wrong format
    np.savetxt(f"{prefix}.elems.csv", elems, delimiter=",", fmt="%d")
    with pytest.raises(InputError, match="columns"):
        RVESolver(str(prefix))
    elems = np.column_stack([np.arange(1, small_rve.n_elements + 1), small_rve.material,
                             small_rve.elements + 1])
    np.savetxt(f"{prefix}.elems.csv", elems, delimiter=",", fmt="%d")
    assert RVESolver(str(prefix)).solve([0.01, 0, 0]).stress[0] > 0
    with pytest.raises(InputError, match="material"):
        RVESolver(str(prefix), materials={1: MATRIX})


def test_cli_rve_solve_json(capsys, tmp_path, small_rve):
    import json

    from femno.cli.main import main

    prefix = str(tmp_path / "inc")
    np.savetxt(f"{prefix}.nodes.csv", small_rve.nodes, delimiter=",")
    np.savetxt(f"{prefix}.elems.csv", np.column_stack([np.arange(1, small_rve.n_elements + 1),
                                                        small_rve.material, small_rve.elements + 1]),
               delimiter=",", fmt="%d")
    assert main(["rve", "solve", "--rve", prefix, "--strain", "0.01", "0", "0.02", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = RVESolver(small_rve).solve([0.01, 0, 0.02])
    np.testing.assert_allclose(out["stress"], ref.stress, rtol=1e-10)
    np.testing.assert_allclose(out["tangent"], ref.tangent, rtol=1e-8, atol=1e-8)
    assert out["newton_iterations"] >= 1 and out["seconds"] > 0
    assert len(out["residual_norms"]) == out["newton_iterations"] + 1
    assert main(["rve", "solve", "--rve", prefix, "--strain", "nan", "0", "0"]) == 2
    assert main(["rve", "solve", "--rve", prefix, "--strain", "0.01", "0", "0"]) == 0
    assert "tangent" in capsys.readouterr().out


def test_warm_start(small_rve):
    solver = RVESolver(small_rve, tol=1e-12)
    cold = solver.solve([0.03, -0.01, 0.02])
    again = solver.solve([0.03, -0.01, 0.02], u0=cold.fluctuation)
    assert again.newton_iterations == 0
    np.testing.assert_allclose(again.tangent, cold.tangent, rtol=1e-9, atol=1e-9)
    near = solver.solve([0.031, -0.01, 0.02], u0=cold.fluctuation)
    ref = solver.solve([0.031, -0.01, 0.02])
    assert near.newton_iterations < ref.newton_iterations
    np.testing.assert_allclose(near.stress, ref.stress, rtol=1e-9)
    with pytest.raises(InputError, match="u0"):
        solver.solve([0.01, 0, 0], u0=np.zeros(3))
