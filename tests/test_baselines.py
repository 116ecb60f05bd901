"""FNO and DeepONet baselines on FE data: transfers, shapes, overfit, checkpoints, CLI, errors."""

import numpy as np
import pytest
import torch

from femno.cli.main import main as cli_main
from femno.datagen.generate import generate_dataset
from femno.errors import InputError
from femno.fem.mesh import unit_square
from femno.fem.spaces import make_basis
from femno.operators.baselines import FNO, DeepONet, build_baseline
from femno.operators.checkpoint import load_model, save_model
from femno.operators.fe_data import FEData
from femno.operators.fe_training import evaluate_operator, fit_operator
from femno.operators.grid_transfer import bilinear_matrix, grid_points, probe_matrix

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    d = tmp_path_factory.mktemp("baselines")
    paths = {}
    for fam, opts in (("poisson", {"n": 5}), ("darcy", {"n": 6, "length": 0.3})):
        paths[fam] = str(d / f"{fam}.femno")
        generate_dataset(fam, samples=8, out=paths[fam], method="direct", block=8,
                         family_options=opts, progress=False)
    return paths


@pytest.fixture(scope="module")
def poisson(datasets):
    return FEData.from_dataset(datasets["poisson"])


def test_grid_transfers_exact_on_polynomials():
    basis = make_basis(unit_square(3), "P2")
    pts = grid_points([0, 0], [1, 1], 7)
    u = basis.doflocs[0] ** 2 - 3 * basis.doflocs[0] * basis.doflocs[1]   # in P2
    P = probe_matrix(basis, pts)
    assert np.allclose(P @ u, pts[:, 0] ** 2 - 3 * pts[:, 0] * pts[:, 1], atol=1e-12)
    rng = np.random.default_rng(0)
    q = rng.random((40, 2))
    W = bilinear_matrix([0, 0], [1, 1], 7, q)
    g = 2 + pts[:, 0] - 4 * pts[:, 1] + 5 * pts[:, 0] * pts[:, 1]         # bilinear
    assert np.allclose(W @ g, 2 + q[:, 0] - 4 * q[:, 1] + 5 * q[:, 0] * q[:, 1], atol=1e-12)
    assert np.allclose(W.sum(axis=1), 1.0)


def test_probe_outside_domain_rows_are_zero():
    from femno.fem.mesh import lshape

    basis = make_basis(lshape(2), "P1")
    P = probe_matrix(basis, [[0.25, 0.25], [0.9, 0.9], [0.75, 0.25]])
    assert np.allclose(P.sum(axis=1).A.ravel(), [1.0, 0.0, 1.0])


@pytest.mark.parametrize("arch", ["fno", "deeponet"])
def test_shapes_dtype_and_fe_input(poisson, arch):
    m = build_baseline(arch, poisson, resolution=8, width=8, modes=3, layers=2, depth=1, p=4)
    out = m(poisson.X[:3])
    assert out.shape == (3, poisson.n_dofs) and out.dtype == torch.float64
    assert torch.equal(m(poisson.X[:3], poisson.lift[:3]), out)   # the lifting is ignored
    with pytest.raises(InputError, match="shape"):
        m(poisson.X[:3, 0])
    with pytest.raises(InputError, match="shape"):
        m(torch.zeros(2, 1, poisson.n_in_dofs + 1, dtype=torch.float64))


def test_fno_grid_input_is_the_interpolated_fe_function(poisson):
    m = build_baseline("fno", poisson, resolution=9, width=4, modes=2, layers=1)
    x = poisson.X[:2]
    g = m.to_grid(x).double()
    pts = grid_points(m.config["lo"], m.config["hi"], 9)
    P = probe_matrix(poisson.basis_in, pts)
    xn = ((x - m.x_mean) / m.x_std)[:, 0].numpy()
    assert np.allclose(g[:, 0].reshape(2, -1).numpy(), (P @ xn.T).T, atol=1e-5)


@pytest.mark.parametrize("arch,kw,epochs", [
    ("fno", dict(resolution=8, width=8, modes=3, layers=2), 60),
    # a coordinate MLP trunk is slow on high frequencies (spectral bias): smooth Darcy data
    ("deeponet", dict(width=64, depth=2, p=32), 300),
])
def test_tiny_overfit(datasets, poisson, arch, kw, epochs):
    data = (poisson if arch == "fno" else FEData.from_dataset(datasets["darcy"]))
    data = data.subset(slice(0, 2))
    m = build_baseline(arch, data, seed=0, **kw)
    res = fit_operator(m, data, None, epochs=epochs, batch_size=None, lr=2e-2, seed=0,
                       progress=False, device="cpu", schedule=None)
    first, last = res.history[0]["loss"], min(h["loss"] for h in res.history)
    assert last < first / 10
    ev = evaluate_operator(m, data)
    assert ev["rel_l2"] < first / 10


@pytest.mark.parametrize("arch", ["fno", "deeponet"])
def test_save_load_round_trip(poisson, tmp_path, arch):
    m = build_baseline(arch, poisson, resolution=8, width=8, modes=3, layers=1, depth=1, p=4)
    path = save_model(m, tmp_path / f"{arch}.pt", meta={"note": arch})
    m2 = load_model(path, kind=arch)
    assert type(m2) is type(m) and m2.meta["note"] == arch
    with torch.no_grad():
        assert torch.equal(m(poisson.X), m2(poisson.X))
    with pytest.raises(InputError, match="expected"):
        load_model(path, kind="spon" if arch == "fno" else "fno")


def test_bad_configurations(poisson):
    with pytest.raises(InputError, match="unknown baseline"):
        build_baseline("unet", poisson)
    with pytest.raises(InputError):
        FNO(n_in=4, n_dofs=4, resolution=2)
    with pytest.raises(InputError):
        DeepONet(n_in=0, n_dofs=3)
    with pytest.raises(InputError, match="grid resolution"):
        grid_points([0, 0], [1, 1], 1)


def test_cli_train_baseline_and_resume_on_other_data(datasets, tmp_path, capsys):
    import json

    out = tmp_path / "don.pt"
    rc = cli_main(["train", "baseline", "--arch", "deeponet", "--data", datasets["poisson"],
                   "--out", str(out), "--epochs", "2", "--width", "8", "--depth", "1",
                   "--p", "4", "--split", "0.5,0.25,0.25", "--device", "cpu", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and summary["samples"] == {"train": 4, "val": 2, "test": 2}
    m = load_model(out)
    assert m.meta["data"]["family"] == "poisson" and len(m.meta["history"]) == 2
    # resuming the training state on another dataset is refused
    rc = cli_main(["train", "baseline", "--arch", "deeponet", "--data", datasets["darcy"],
                   "--out", str(tmp_path / "x.pt"), "--checkpoint", str(out) + ".state",
                   "--resume", "--epochs", "3", "--width", "8", "--depth", "1", "--p", "4",
                   "--json"])
    assert rc == 2
    assert "another dataset" in capsys.readouterr().err
    rc = cli_main(["train", "baseline", "--arch", "fno", "--data", datasets["poisson"],
                   "--out", str(tmp_path / "y.pt"), "--split", "0.5,0.6", "--json"])
    assert rc == 2
