"""EquiNO: POD buffers, save/load round trip, AD tangent vs FD, training reduces the loss, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from femno.errors import InputError
from femno.fem.rve import RVEMesh
from femno.multiscale.rve_assembly import laminate_rve
from femno.multiscale.rve_solver import RVESolver
from femno.multiscale.snapshots import generate_snapshots, lhs_strains, load_snapshots
from femno.operators.checkpoint import load_model, save_model
from femno.operators.equino import EquiNO, relative_errors, train_equino


@pytest.fixture(scope="module")
def rve():
    base = laminate_rve([1.0], nx=4, ny=4)
    c = base.nodes[base.elements[:, :4]].mean(axis=1)
    mat = np.where(np.all(np.abs(c) < 0.25, axis=1), 2, 1)
    return RVEMesh(nodes=base.nodes, elements=base.elements, material=mat, name="inclusion")


@pytest.fixture(scope="module")
def data(rve):
    solver = RVESolver(rve)
    E = lhs_strains(12, seed=0)
    res = [solver.solve(e, tangent=False) for e in E]
    return {"rve": rve, "strain": E, "settings": {"bound": 0.04},
            "fluctuation": np.stack([r.fluctuation for r in res]),
            "stress_ip": np.stack([r.stress_ip for r in res]),
            "stress": np.stack([r.stress for r in res])}


@pytest.fixture(scope="module")
def trained(data):
    torch.set_num_threads(1)
    return train_equino(data, modes=6, epochs=60, lbfgs_iters=30, lr=3e-3, seed=0, device="cpu",
                        progress=False)


def test_training_reduces_physics_loss(trained, data):
    assert trained["final_loss"] < 0.05 * trained["initial_loss"]
    errs = relative_errors(trained["model"], data)
    assert set(errs) == {"u_x", "u_y", "sigma_xx", "sigma_yy", "sigma_xy", "stress",
                         "u_x_total", "u_y_total"}
    assert np.median(errs["stress"]) < 30.0


def test_pod_fields_are_periodic_and_homogenized_stress_is_weighted_mean(trained, data, rve):
    model = trained["model"]
    f = model.fields(data["strain"][:3])
    px, py = rve.periodic_pairs()
    u = f["fluctuation"]
    np.testing.assert_allclose(u[:, px[:, 0]], u[:, px[:, 1]], atol=1e-12)
    np.testing.assert_allclose(u[:, py[:, 0]], u[:, py[:, 1]], atol=1e-12)
    solver = RVESolver(rve)
    w = solver.w.ravel() / solver.area
    np.testing.assert_allclose(np.einsum("i,nic->nc", w, f["stress_ip"]), f["stress"], rtol=1e-10)
    s, _ = model.stress_and_tangent(data["strain"][:3])
    np.testing.assert_allclose(s, f["stress"], rtol=1e-12)


def test_tangent_is_derivative_of_stress(trained):
    model = trained["model"]
    e = lhs_strains(4, seed=3)
    s, C = model.stress_and_tangent(e)
    assert s.dtype == np.float64 and s.shape == (4, 3) and C.shape == (4, 3, 3)
    h = 1e-6
    Cfd = np.stack([(model.stress_and_tangent(e + h * np.eye(3)[j])[0]
                     - model.stress_and_tangent(e - h * np.eye(3)[j])[0]) / (2 * h)
                    for j in range(3)], axis=-1)
    assert np.abs(C - Cfd).max() <= 1e-6 * np.abs(C).max()
    s2, C2 = model.stress_and_tangent(torch.as_tensor(e))  # tensors accepted too
    np.testing.assert_allclose(s2, s, rtol=1e-12)


def test_save_load_round_trip(trained, tmp_path):
    model = trained["model"]
    path = save_model(model, tmp_path / "eq.pt", meta={"note": "test"})
    loaded = load_model(path, kind="equino")
    assert isinstance(loaded, EquiNO) and loaded.meta["note"] == "test"
    assert loaded.config == model.config
    e = lhs_strains(5, seed=4)
    for a, b in zip(model.stress_and_tangent(e), loaded.stress_and_tangent(e), strict=False):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.phi_s.numpy(), model.phi_s.numpy())


def test_bad_inputs(trained, data, rve):
    model = trained["model"]
    with pytest.raises(InputError):
        model.stress_and_tangent(np.zeros((2, 2)))
    with pytest.raises(InputError):
        model.stress_and_tangent([np.nan, 0.0, 0.0])
    with pytest.raises(InputError):
        EquiNO.from_snapshots(RVESolver(rve), data["fluctuation"][:, :-1], data["stress_ip"])
    with pytest.raises(InputError, match="modes"):
        EquiNO.from_snapshots(RVESolver(rve), data["fluctuation"][:2], data["stress_ip"][:2],
                              modes=3)


def test_snapshots_resume_and_cli(tmp_path, rve):
    from femno.cli.main import main

    prefix = tmp_path / "inc"
    np.savetxt(f"{prefix}.nodes.csv", rve.nodes, delimiter=",")
    np.savetxt(f"{prefix}.elems.csv", np.column_stack([np.arange(1, rve.n_elements + 1),
                                                        rve.material, rve.elements + 1]),
               delimiter=",", fmt="%d")
    out = tmp_path / "snap"
    s1 = generate_snapshots(str(prefix), samples=6, out=out, block=2, progress=False)
    assert s1["done"] == 6 and s1["computed"] == 6
    s2 = generate_snapshots(str(prefix), samples=6, out=out, block=2, progress=False)
    assert s2["computed"] == 0 and s2["message"] == "resumed"
    with pytest.raises(InputError, match="other settings"):
        generate_snapshots(str(prefix), samples=6, out=out, block=2, seed=5, progress=False)
    d = load_snapshots(out)
    np.testing.assert_allclose(d["strain"], lhs_strains(6, seed=0))
    model = tmp_path / "m.pt"
    assert main(["train", "equino", "--snapshots", str(out), "--out", str(model), "--modes", "4",
                 "--epochs", "5", "--lbfgs-iters", "3", "--device", "cpu", "--json"]) == 0
    assert main(["rve", "evaluate", str(model), "--test", str(out), "--json"]) == 0
    assert main(["train", "equino", "--rve", "RVE1", "--snapshots", str(out), "--out",
                 str(model), "--epochs", "1"]) == 2


def test_cli_evaluate_output(tmp_path, capsys, rve):
    from femno.cli.main import main

    out = tmp_path / "snap"
    generate_snapshots(rve, samples=4, out=out, progress=False)
    capsys.readouterr()
    model = tmp_path / "m.pt"
    main(["train", "equino", "--snapshots", str(out), "--out", str(model), "--modes", "3",
          "--epochs", "3", "--lbfgs-iters", "0", "--device", "cpu", "--json"])
    capsys.readouterr()
    assert main(["rve", "evaluate", str(model), "--test", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"u_x", "u_y", "sigma_xx", "sigma_yy", "sigma_xy", "stress"} <= set(res["median"])
    assert res["samples"] == 4
