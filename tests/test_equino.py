"""EquiNO: POD buffers, save/load, tangents (forward mode vs AD vs FD), training-range warning,
LM initialization (reduced solves, coefficient fit), training reduces the loss, CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from femno.errors import InputError
from femno.fem.rve import RVEMesh
from femno.multiscale.fe2 import run_fe2
from femno.multiscale.micro import EquiNOMicro, range_violations
from femno.multiscale.rve_assembly import laminate_rve
from femno.multiscale.rve_solver import RVESolver
from femno.multiscale.snapshots import generate_snapshots, lhs_strains, load_snapshots
from femno.operators.checkpoint import load_model, save_model
from femno.operators.equino import EquiNO
from femno.operators.equino_fit import fit_coefficients, reduced_solve
from femno.operators.equino_train import relative_errors, train_equino


@pytest.fixture(scope="module")
def rve():
    base = laminate_rve([1.0], nx=4, ny=4)
    c = base.nodes[base.elements[:, :4]].mean(axis=1)
    mat = np.where(np.all(np.abs(c) < 0.25, axis=1), 2, 1)
    return RVEMesh(nodes=base.nodes, elements=base.elements, material=mat, name="inclusion")


def snapshot_data(rve, n: int) -> dict:
    """FE snapshots of ``rve`` at ``n`` LHS strains (seed 0), as load_snapshots returns them."""
    solver = RVESolver(rve)
    E = lhs_strains(n, seed=0)
    res = [solver.solve(e, tangent=False) for e in E]
    return {"rve": rve, "strain": E, "settings": {"bound": 0.04},
            "fluctuation": np.stack([r.fluctuation for r in res]),
            "stress_ip": np.stack([r.stress_ip for r in res]),
            "stress": np.stack([r.stress for r in res])}


def pod_model(d: dict, **kw) -> EquiNO:
    """Untrained EquiNO (POD bases, fresh networks) of snapshot dict ``d``."""
    return EquiNO.from_snapshots(RVESolver(d["rve"]), d["fluctuation"], d["stress_ip"], **kw)


@pytest.fixture(scope="module")
def data(rve):
    return snapshot_data(rve, 12)


@pytest.fixture(scope="module")
def lam_data():
    torch.set_num_threads(1)
    return snapshot_data(laminate_rve([0.4, 0.6], nx=2, ny=2), 10)


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


# -- forward-mode tangent, training range ------------------------------------------------
@pytest.fixture(scope="module")
def rough(lam_data):
    """An EquiNO with large random weights: strongly nonlinear, a hard tangent test."""
    model = pod_model(lam_data, modes=5, seed=3)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.net_s.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return model


@pytest.fixture(scope="module")
def linear(lam_data):
    """An EquiNO whose stress is exactly the laminate's zero-strain tangent times the strain
    (SiLU(z) = z to rounding for z ~ 50), with training range [-0.04, 0.04]^3: a well-posed
    micro model for macro solves that needs no training."""
    C0 = RVESolver(lam_data["rve"]).solve(np.zeros(3)).tangent
    model = pod_model(lam_data, modes=5, seed=0, train_bounds=[[-0.04] * 3, [0.04] * 3])
    lins = [m for m in model.net_s if isinstance(m, torch.nn.Linear)]
    A = (model.avg_s * model.scale_s).numpy()  # stress = A @ network output
    with torch.no_grad():
        for k, lin in enumerate(lins[:-1]):
            lin.weight.zero_()
            lin.bias.fill_(50.0 if k == 0 else 0.0)
            if k == 0:
                lin.weight[:3, :3] = torch.eye(3, dtype=torch.float64)
            else:
                lin.weight.copy_(torch.eye(lin.weight.shape[0], dtype=torch.float64))
        Wout = np.linalg.pinv(A) @ C0 * model.config["strain_scale"]
        lins[-1].weight.zero_()
        lins[-1].weight[:, :3] = torch.as_tensor(Wout)
        lins[-1].bias.copy_(torch.as_tensor(-Wout @ np.full(3, 50.0)))
    _, C = model.stress_and_tangent(lhs_strains(4, seed=1))
    np.testing.assert_allclose(C, np.broadcast_to(C0, C.shape), rtol=1e-9,
                               atol=1e-9 * np.abs(C0).max())
    return model


def test_forward_tangent_agrees_with_ad(rough):
    e = lhs_strains(33, seed=5)
    s_ad, C_ad = rough.stress_and_tangent(e, method="ad")
    scale = np.abs(C_ad).max()
    assert scale > 0
    for method in ("auto", "numpy", "forward"):
        s, C = rough.stress_and_tangent(e, method=method)
        assert s.dtype == np.float64 and C.shape == (33, 3, 3)
        np.testing.assert_allclose(s, s_ad, rtol=0, atol=1e-12 * np.abs(s_ad).max())
        np.testing.assert_allclose(C, C_ad, rtol=0, atol=1e-12 * scale)
    st, Ct = rough.stress_and_tangent_torch(torch.as_tensor(e))
    np.testing.assert_allclose(Ct.numpy(), C_ad, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(rough.forward(torch.as_tensor(e)).detach().numpy(), s_ad,
                               rtol=0, atol=1e-12 * np.abs(s_ad).max())
    with pytest.raises(InputError, match="method"):
        rough.stress_and_tangent(e, method="reverse")


def test_numpy_weight_cache_follows_parameter_updates(lam_data):
    model = pod_model(lam_data, modes=4, seed=1)
    e = lhs_strains(5, seed=6)
    C0 = model.stress_and_tangent(e, method="numpy")[1]
    with torch.no_grad():
        next(model.net_s.parameters()).mul_(1.5)  # in place, as an optimizer step
    C1 = model.stress_and_tangent(e, method="numpy")[1]
    np.testing.assert_allclose(C1, model.stress_and_tangent(e, method="ad")[1], rtol=1e-12,
                               atol=1e-12 * np.abs(C1).max())
    assert np.abs(C1 - C0).max() > 1e-6 * np.abs(C0).max()
    other = pod_model(lam_data, modes=4, seed=2)
    model.load_state_dict(other.state_dict())
    np.testing.assert_allclose(model.stress_and_tangent(e)[0], other.stress_and_tangent(e)[0],
                               rtol=1e-13)


def test_forward_tangent_matches_central_differences(rough):
    e = lhs_strains(6, seed=9)
    _, C = rough.stress_and_tangent(e)
    h = 1e-6
    Cfd = np.stack([(rough.stress_and_tangent(e + h * np.eye(3)[j])[0]
                     - rough.stress_and_tangent(e - h * np.eye(3)[j])[0]) / (2 * h)
                    for j in range(3)], axis=-1)
    assert np.abs(C - Cfd).max() <= 1e-6 * np.abs(C).max()


def test_training_range_stored_and_old_checkpoints_load(trained, tmp_path):
    model = trained["model"]
    lo, hi = model.training_range()
    np.testing.assert_allclose(lo, [-0.04] * 3)
    np.testing.assert_allclose(hi, [0.04] * 3)
    path = save_model(model, tmp_path / "m.pt")
    assert load_model(path, kind="equino").training_range()[1].tolist() == hi.tolist()
    # a checkpoint written before train_bounds existed: no key in its config
    obj = torch.load(path, weights_only=False)
    del obj["config"]["train_bounds"]
    torch.save(obj, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt", kind="equino")
    assert old.training_range() is None
    micro = EquiNOMicro(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        micro.stress_and_tangent(np.full((2, 3), 0.5))  # no range known: no warning
    assert micro.describe()["out_of_range"] == []


def test_range_violations():
    b = ([-0.04, -0.04, -0.02], [0.04, 0.04, 0.02])
    assert range_violations([[0.0, 0.03, 0.01]], b) == []
    v = range_violations([[0.05, 0.0, 0.0], [-0.06, 0.0, -0.03]], b)
    assert v == [{"component": "eps_xx", "value": -0.06, "range": [-0.04, 0.04]},
                 {"component": "gamma_xy", "value": -0.03, "range": [-0.02, 0.02]}]
    assert range_violations([[1.0, 1.0, 1.0]], None) == []


def test_equino_micro_warns_once_outside_the_training_range(trained):
    model = trained["model"]
    micro = EquiNOMicro(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        micro.stress_and_tangent(lhs_strains(5, seed=2))  # inside: silent
    with pytest.warns(UserWarning, match=r"gamma_xy = 0\.055 not in \[-0\.04, 0\.04\]"):
        micro.stress_and_tangent(np.array([[0.0, 0.01, 0.055]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per micro model (run)
        micro.stress_and_tangent(np.array([[0.0, 0.0, 0.07], [-0.05, 0.0, 0.0]]))
    d = micro.describe()
    assert d["training_range"] == [[-0.04] * 3, [0.04] * 3]
    assert {v["component"]: v["value"] for v in d["out_of_range"]} == {"gamma_xy": 0.07,
                                                                         "eps_xx": -0.05}


def test_macro_result_and_cli_report_out_of_range(linear, tmp_path, capsys):
    from femno.cli.main import main

    res = run_fe2("cook", EquiNOMicro(linear), steps=1, n=2, load=50.0)
    assert res.iterations == [1]
    assert res.out_of_range == [] and res.to_dict()["out_of_range"] == []
    assert run_fe2("cook", "linear", steps=1, n=2, load=2.0).out_of_range is None
    from femno.multiscale.macro import macro_problem, solve_macro

    bare = solve_macro(macro_problem("cook", n=2, load=50.0), linear, steps=1)  # EquiNO itself
    assert bare.out_of_range == [] and bare.reaction == res.reaction
    linear.config["train_bounds"] = [[-1e-4] * 3, [1e-4] * 3]
    try:
        path = save_model(linear, tmp_path / "narrow.pt")
        with pytest.warns(UserWarning, match="outside its training range"):
            res = run_fe2("cook", EquiNOMicro(linear), steps=2, n=2, load=50.0)
        names = {v["component"] for v in res.out_of_range}
        assert "gamma_xy" in names
        gxy = next(v for v in res.out_of_range if v["component"] == "gamma_xy")
        assert abs(gxy["value"]) == pytest.approx(np.abs(res.strain[:, 2]).max())
        capsys.readouterr()
        with pytest.warns(UserWarning, match="outside its training range"):
            assert main(["fe2", "--macro", "cook", "--micro", f"equino:{path}", "--steps", "1",
                         "--n", "2", "--load", "50", "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert {v["component"] for v in out["out_of_range"]} == names
        assert out["micro"]["training_range"] == [[-1e-4] * 3, [1e-4] * 3]
        with pytest.warns(UserWarning):
            assert main(["fe2", "--macro", "cook", "--micro", f"equino:{path}", "--steps", "1",
                         "--n", "2", "--load", "50", "--quiet"]) == 0
        assert "OUTSIDE training range" in capsys.readouterr().out
    finally:
        linear.config["train_bounds"] = [[-0.04] * 3, [0.04] * 3]


# -- LM initialization -----------------------------------------------------------------
def test_lm_reproduces_the_fe_projection_at_snapshot_strains(lam_data):
    # with as many modes as snapshots, every FE snapshot is an exact zero of the residual
    model = pod_model(lam_data, modes=10)
    out = reduced_solve(model, lam_data["strain"][:6], block=4, progress=False)
    phi_u, phi_s = model.phi_u.numpy(), model.phi_s.numpy()
    cu_fe = lam_data["fluctuation"][:6].reshape(6, -1) @ phi_u
    cs_fe = lam_data["stress_ip"][:6].reshape(6, -1) @ phi_s
    assert out["loss"].max() < 1e-20
    np.testing.assert_allclose(out["cu"], cu_fe, atol=1e-9 * np.abs(cu_fe).max())
    np.testing.assert_allclose(out["cs"], cs_fe, atol=1e-9 * np.abs(cs_fe).max())
    # the reduced loss is the network loss evaluated at these coefficients
    e = torch.as_tensor(lam_data["strain"][:6])
    with torch.no_grad():
        r = model.residual(e, (torch.as_tensor(out["cu"]), torch.as_tensor(out["cs"])))
    np.testing.assert_allclose((r ** 2).sum(-1).mean(-1).numpy(), out["loss"], atol=1e-20)


def test_lm_minimizes_the_loss_between_snapshots(lam_data):
    model = pod_model(lam_data, modes=4)
    E = lhs_strains(5, seed=11)
    out = reduced_solve(model, E, progress=False)
    assert np.all(out["iterations"] >= 1)
    e = torch.as_tensor(E)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for _ in range(3):  # any perturbation of the minimizer raises the loss
            cu = out["cu"] + 1e-3 * np.abs(out["cu"]).max() * rng.normal(size=out["cu"].shape)
            eps = e[:, None, :] + (torch.as_tensor(cu) @ model.b_phi_u.T).reshape(5, -1, 3)
            sig_c = model.constitutive_stress(eps).reshape(5, -1)
            cs = sig_c @ model.phi_s  # optimal stress coefficients for these cu
            r = model.residual(e, (torch.as_tensor(cu), cs))
            assert np.all((r ** 2).sum(-1).mean(-1).numpy() > out["loss"])
    with pytest.raises(InputError):
        reduced_solve(model, E, c0=np.zeros((2, 4)), progress=False)


def test_coefficient_fit_lowers_the_physics_loss(lam_data):
    model = pod_model(lam_data, modes=4, seed=0)
    E = np.concatenate([lam_data["strain"], lhs_strains(20, seed=1)])
    e = torch.as_tensor(E)
    with torch.no_grad():
        before = float(model.loss(e))
    out = reduced_solve(model, E, progress=False)
    fit_coefficients(model, E, out["cu"], out["cs"], epochs=30, lbfgs_iters=60, progress=False)
    with torch.no_grad():
        after = float(model.loss(e))
        cu, cs = model.coefficients(e)
    assert after < 0.01 * before
    rel = np.linalg.norm(cu.numpy() - out["cu"]) / np.linalg.norm(out["cu"])
    assert rel < 0.2


def test_train_equino_lm_init_and_cli(lam_data, tmp_path, capsys):
    res = train_equino(lam_data, modes=4, epochs=0, lbfgs_iters=0, collocation=20, init="lm",
                       fit_epochs=30, fit_lbfgs_iters=60, progress=False, device="cpu",
                       collocation_small=5, fit_weighting="relative", zero_origin=True)
    assert res["init"] == "lm" and res["n_train_strains"] == 35
    assert res["fit_weighting"] == "relative" and res["collocation_small"] == 5
    assert res["final_loss"] < 0.01 * res["random_init_loss"]
    errs = relative_errors(res["model"], lam_data)
    assert np.median(errs["stress"]) < 15.0  # 4 modes, tiny fit budget
    with pytest.raises(InputError, match="init"):
        train_equino(lam_data, modes=4, epochs=1, init="pod", progress=False)

    from femno.cli.main import main

    snap = tmp_path / "snap"
    generate_snapshots(lam_data["rve"], samples=6, out=snap, progress=False)
    capsys.readouterr()
    model = tmp_path / "m.pt"
    assert main(["train", "equino", "--snapshots", str(snap), "--out", str(model), "--modes", "4",
                 "--init", "lm", "--collocation", "10", "--fit-epochs", "20",
                 "--fit-lbfgs-iters", "20", "--epochs", "2", "--lbfgs-iters", "2",
                 "--device", "cpu", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["init"] == "lm" and out["lm_loss_median"] >= 0


def test_relative_fit_weighting_favours_small_strains(lam_data):
    # targets at magnitudes 1e-3 .. 1 of the box: the absolute loss is dominated by the
    # large strains, the relative one weighs every strain's relative error alike
    E = np.concatenate([lhs_strains(20, seed=1), lhs_strains(20, seed=2, scales=(1e-3, 3e-2))])
    small = np.abs(E).max(axis=1) < 0.04 * 3e-2 + 1e-15
    errs = {}
    for weighting in ("absolute", "relative"):
        model = pod_model(lam_data, modes=4, seed=0, zero_origin=True)
        out = reduced_solve(model, E, progress=False)
        fit_coefficients(model, E, out["cu"], out["cs"], epochs=30, lbfgs_iters=80,
                         progress=False, weighting=weighting)
        with torch.no_grad():
            cu, _ = model.coefficients(torch.as_tensor(E))
        rel = np.linalg.norm(cu.numpy() - out["cu"], axis=1) / np.linalg.norm(out["cu"], axis=1)
        errs[weighting] = (np.median(rel[small]), np.median(rel[~small]))
    assert errs["relative"][0] < 0.5 * errs["absolute"][0], errs
    with pytest.raises(InputError, match="weighting"):
        fit_coefficients(model, E, out["cu"], out["cs"], epochs=1, lbfgs_iters=0,
                         progress=False, weighting="huber")


def test_small_strain_collocation():
    e = lhs_strains(200, seed=3, scales=(0.01, 0.5))
    mag = np.abs(e).max(axis=1) / 0.04
    assert mag.max() <= 0.5 and mag.min() < 0.05  # log-uniform magnitudes reach the small end
    np.testing.assert_array_equal(e, lhs_strains(200, seed=3, scales=(0.01, 0.5)))
    with pytest.raises(InputError, match="scales"):
        lhs_strains(3, scales=(0.5, 0.1))


def test_zero_origin_networks(lam_data, tmp_path):
    model = pod_model(lam_data, modes=4, seed=3, zero_origin=True)
    with torch.no_grad():  # a non-zero output bias: the offset must still cancel
        for net in (model.net_u, model.net_s):
            net[-1].bias.fill_(0.7)
    e = np.concatenate([np.zeros((1, 3)), lhs_strains(6, seed=2)])
    s_ref = np.abs(model.stress_and_tangent(e)[0]).max()
    for method in ("numpy", "forward", "ad"):
        s, C = model.stress_and_tangent(e, method=method)
        assert np.abs(s[0]).max() < 1e-12 * s_ref, method  # zero to rounding (5e-13 seen)
        s_ad, C_ad = model.stress_and_tangent(e, method="ad")
        np.testing.assert_allclose(s, s_ad, rtol=1e-12, atol=1e-12 * np.abs(s_ad).max())
        np.testing.assert_allclose(C, C_ad, rtol=1e-12, atol=1e-12 * np.abs(C_ad).max())
    f = model.fields(e)
    assert np.abs(f["fluctuation"][0]).max() < 1e-13 * np.abs(f["fluctuation"]).max()
    assert np.abs(f["stress"][0]).max() < 1e-13 * s_ref
    save_model(model, tmp_path / "z.pt")
    back = load_model(tmp_path / "z.pt")
    assert back.zero_origin
    np.testing.assert_array_equal(back.stress_and_tangent(e)[0], model.stress_and_tangent(e)[0])
