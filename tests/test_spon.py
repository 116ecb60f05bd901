"""SPON and multigrid SPON: exact Dirichlet data, training, save/load, other meshes, errors."""

import json

import numpy as np
import pytest
import torch

from femno.cli.main import main
from femno.cli.train_spon import SPON_RECIPE
from femno.datagen.generate import generate_dataset
from femno.errors import InputError
from femno.fem import get_family
from femno.fem.bc import boundary_dofs
from femno.fem.mesh import unit_square, unstructured_disk, unstructured_square
from femno.fem.spaces import make_basis
from femno.operators.checkpoint import load_model, save_model
from femno.operators.fe_data import FEData
from femno.operators.spon import SPON, SPONMG, make_spon
from femno.operators.spon_train import evaluate, train_spon

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def darcy(tmp_path_factory):
    path = tmp_path_factory.mktemp("spon") / "darcy"
    generate_dataset("darcy", samples=8, out=path, method="direct", block=8,
                     family_options={"n": 6, "length": 0.3}, progress=False)
    return FEData.from_dataset(path)


def _random_lift(model, basis, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    lift = torch.randn(S, basis.N, dtype=torch.float64, generator=g)  # junk on free dofs too
    return lift


@pytest.mark.parametrize("arch", ["spon", "spon-mg", "spon-mg2", "spon-global", "spon-mg-global"])
@pytest.mark.parametrize("elem,vector", [("P1", False), ("P2", False), ("P1", True)])
def test_dirichlet_values_exact_for_random_weights(arch, elem, vector):
    basis = make_basis(unstructured_square(8, seed=1), elem, vector=vector)
    D = boundary_dofs(basis)
    torch.manual_seed(3)
    cls = SPON if arch.startswith("spon-global") or arch == "spon" else SPONMG
    opts = {"levels": 2} if arch == "spon-mg2" else {}
    if arch.endswith("global"):
        opts.update(global_rank=4, fourier=2, input_rank=3, input_skip=True)
    model = cls(channels=["a", "b"], n_components=2 if vector else 1, width=8, layers=2, **opts)
    model.bind(basis, D)
    for p in model.parameters():  # large random weights
        torch.nn.init.normal_(p, std=2.0)
    n_in = basis.N // (2 if vector else 1)
    x = torch.randn(4, 2, n_in, dtype=torch.float64)
    lift = _random_lift(model, basis, 4)
    u = model(x, lift)
    assert u.shape == (4, basis.N) and u.dtype == torch.float64
    assert torch.equal(u[:, D], lift[:, D])  # bit for bit
    free = np.setdiff1d(np.arange(basis.N), D)
    assert torch.isfinite(u).all() and u[:, free].abs().sum() > 0


def test_small_model_overfits_tiny_dataset(darcy):
    model, s = train_spon(darcy, width=16, layers=3, epochs=200, batch_size=8, lr=2e-2,
                          val_fraction=0, progress=False, seed=0)
    first, last = s["history"][0]["loss"], s["history"][-1]["loss"]
    assert last < first / 10, (first, last)
    assert s["train"]["rel_l2_mean"] < first / 10
    assert s["boundary_error"] == 0.0


@pytest.mark.slow
def test_multigrid_model_overfits_tiny_dataset(darcy):
    _, s = train_spon(darcy, arch="spon-mg", width=16, layers=2, epochs=150, batch_size=8,
                      lr=1e-2, val_fraction=0, progress=False, model_options={"fine_layers": 1})
    assert s["history"][-1]["loss"] < s["history"][0]["loss"] / 10


@pytest.mark.parametrize("arch,rank", [("spon", 0), ("spon-mg", 0), ("spon-mg", 4)])
def test_save_load_round_trip_and_other_mesh(darcy, tmp_path, arch, rank):
    model = make_spon(arch, darcy, width=8, layers=2, seed=1, global_rank=rank, fourier=rank,
                      input_rank=rank, input_skip=rank > 0)
    pred = model.predict(darcy)
    path = save_model(model, tmp_path / "m.pt", meta={"note": "t"})
    loaded = load_model(path, kind=arch)
    assert loaded.meta["note"] == "t" and loaded.graph is None
    torch.testing.assert_close(loaded.predict(darcy), pred, rtol=0, atol=0)
    # apply to a Darcy problem on an unstructured disk (a different mesh and domain)
    fam = get_family("darcy", mesh=unstructured_disk(4, seed=2), length=0.3)
    params = [fam.sample(np.random.default_rng(i)) for i in range(2)]
    other = FEData.from_family(fam, params)
    u = loaded.predict(other)
    assert u.shape == (2, fam.basis.N)
    assert torch.equal(u[:, other.dirichlet], other.lift[:, other.dirichlet])
    assert torch.isfinite(u).all()


@pytest.mark.parametrize("elem", ["P1", "P2"])
def test_global_mix_weights_integrate_on_any_mesh(elem):
    """The GlobalMix node weights are a quadrature of the mean over the domain, on
    every level and on meshes of different resolution: sum_j w_j f(x_j) -> mean f."""
    exact = 1.0 / 3.0 + 0.5  # mean of x^2 + y over the unit square
    for n in (8, 16):
        basis = make_basis(unstructured_square(n, seed=2), elem)
        model = SPONMG(channels=["f"], width=4, layers=1, global_rank=2, levels=2)
        model.bind(basis, boundary_dofs(basis))
        g = model.graph
        levels = [(g.weights, basis.doflocs.T)] + [
            (getattr(g, f"l{k}_weights"), lvl.pos)
            for k, lvl in enumerate(model.hierarchy, start=1)]
        for w, pos in levels:
            w = w.double().numpy()
            # P2 vertex functions integrate to zero on triangles: weights >= 0
            assert (w > -1e-9).all() and abs(w.sum() - 1) < 1e-6
            # second-order quadrature: error ~ h^2 ~ 1 / nodes (measured 0.3-0.45 / nodes)
            assert abs(w @ (pos[:, 0] ** 2 + pos[:, 1]) - exact) < 0.6 / len(pos), (n, elem)


def test_global_mix_reaches_across_the_mesh():
    """One message-passing layer sees only neighbours; with a GlobalMix or an
    InputKernel, an input change at one dof moves the output at the farthest dof."""
    basis = make_basis(unstructured_square(8, seed=1), "P1")
    D = boundary_dofs(basis)
    x0 = torch.zeros(1, 1, basis.N, dtype=torch.float64)
    free = np.setdiff1d(np.arange(basis.N), D)
    s = basis.doflocs[0] + basis.doflocs[1]
    far, near = free[s[free].argmax()], free[s[free].argmin()]  # near (1, 1) and (0, 0)
    x1 = x0.clone()
    x1[0, 0, near] = 1.0
    lift = torch.zeros(1, basis.N, dtype=torch.float64)
    for opts, moves in (({}, False), ({"global_rank": 4}, True), ({"input_rank": 4}, True)):
        torch.manual_seed(0)
        model = SPON(channels=["f"], width=8, layers=1, **opts).bind(basis, D)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.5)
        delta = (model(x1, lift) - model(x0, lift)).abs()[0]
        assert bool(delta[far] > 0) == moves


def test_input_skip_is_an_affine_path_zero_at_start(darcy):
    """``input_skip`` adds the input kernel's integral to the output through a linear
    map: zero at initialisation (the model equals the one without it), and the
    difference it makes is affine in the input (the normalization shifts it)."""
    base = make_spon("spon-mg", darcy, width=8, layers=1, seed=4, input_rank=3)
    skip = make_spon("spon-mg", darcy, width=8, layers=1, seed=4, input_rank=3, input_skip=True)
    skip.load_state_dict(base.state_dict(), strict=False)
    x1, x2, lift = darcy.X[:3].double(), darcy.X[3:6].double(), darcy.lift[:3].double()
    torch.testing.assert_close(skip(x1, lift), base(x1, lift), rtol=0, atol=0)
    torch.nn.init.normal_(skip.input_skip.weight, std=1.0)
    for m in (base, skip):  # affine in the raw input (Darcy's coefficient is log-encoded)
        m.x_log.zero_()

    def d(x):
        return skip(x, lift) - base(x, lift)

    scale = float(d(x1).abs().max())
    assert scale > 0
    torch.testing.assert_close(d(0.3 * x1 + 0.7 * x2), 0.3 * d(x1) + 0.7 * d(x2),
                               rtol=0, atol=1e-5 * scale)
    with pytest.raises(InputError, match="input_skip needs input_rank"):
        SPON(channels=["a"], width=4, layers=1, input_skip=True)
    with pytest.raises(InputError, match="input_skip must be"):
        SPON(channels=["a"], width=4, layers=1, input_rank=2, input_skip=1)


def test_multigrid_with_given_coarse_mesh(darcy):
    coarse = unit_square(3)
    model = make_spon("spon-mg", darcy, width=8, layers=1, seed=0)
    model.bind(darcy, coarse=coarse)
    assert model.coarse.pos.shape[0] == 16
    u = model(darcy.X, darcy.lift)
    assert torch.equal(u[:, darcy.dirichlet], darcy.lift[:, darcy.dirichlet])


def test_bad_inputs(darcy, tmp_path):
    model = make_spon("spon", darcy, width=8, layers=1)
    with pytest.raises(InputError, match="x must have shape"):
        model(darcy.X[:, :, :-1], darcy.lift)
    with pytest.raises(InputError, match="lift must have shape"):
        model(darcy.X, darcy.lift[:2])
    unbound = SPON(channels=["a"], width=4, layers=1)
    with pytest.raises(InputError, match="not bound"):
        unbound(darcy.X, darcy.lift)
    with pytest.raises(InputError, match="channels"):
        SPON(channels=["k", "rhs"], width=4, layers=1).bind(darcy)
    with pytest.raises(InputError, match="encoded"):
        model.bind(FEData.from_dataset(darcy.path, encode="interp"))
    with pytest.raises(InputError, match="1-component"):
        model.bind(make_basis(unit_square(2), vector=True), [0])
    with pytest.raises(InputError, match="architecture"):
        make_spon("fno", darcy)
    path = save_model(model, tmp_path / "m.pt")
    with pytest.raises(InputError, match="expected 'spon-mg'"):
        load_model(path, kind="spon-mg")
    with pytest.raises(InputError, match="val_fraction"):
        train_spon(darcy, val_fraction=2.0, epochs=1)
    poisson = tmp_path / "poisson"
    generate_dataset("poisson", samples=2, out=poisson, method="direct", block=2,
                     family_options={"n": 3}, progress=False)
    with pytest.raises(InputError, match="channels"):
        load_model(path).predict(FEData.from_dataset(poisson))


def test_cli_train_resume_and_errors(darcy, tmp_path, capsys):
    out = tmp_path / "model.pt"
    argv = ["train", "spon", "--data", str(darcy.path), "--out", str(out), "--epochs", "2",
            "--width", "8", "--layers", "1", "--batch-size", "4", "--val-fraction", "0.25",
            "--json"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["epochs"] == 2 and s["val_samples"] == 2 and s["boundary_error"] == 0.0
    assert out.is_file() and (tmp_path / "model.pt.state").is_file()
    assert main(argv[:7] + ["3"] + argv[8:] + ["--resume"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["resumed_from"] == 2 and s["epochs"] == 3
    model = load_model(out, kind="spon")
    assert {k: model.config[k] for k in SPON_RECIPE} == SPON_RECIPE  # the CLI's defaults
    ev = evaluate(model, darcy)
    assert ev["boundary_error"] == 0.0 and np.isclose(model.meta["train"]["rel_l2_mean"],
                                                      model.meta["train"]["rel_l2_mean"])
    assert main(["train", "spon", "--data", str(tmp_path / "missing"), "--out", "x.pt"]) == 2
    # the global layer through the CLI; a negative rank is a clear error
    g = tmp_path / "global.pt"
    assert main(["train", "spon", "--data", str(darcy.path), "--out", str(g), "--epochs", "1",
                 "--width", "8", "--layers", "1", "--global-rank", "3", "--json"]) == 0
    capsys.readouterr()
    assert load_model(g, kind="spon").config["global_rank"] == 3
    assert main(["train", "spon", "--data", str(darcy.path), "--out", str(g), "--epochs", "1",
                 "--global-rank", "-1", "--json"]) == 2
    assert main(["train", "spon", "--data", str(darcy.path), "--out", str(g), "--epochs", "1",
                 "--fourier", "-2", "--json"]) == 2
    # no input kernel: the skip is off by default, asked for explicitly it is an error
    assert main(["train", "spon", "--data", str(darcy.path), "--out", str(g), "--epochs", "1",
                 "--width", "8", "--layers", "1", "--input-rank", "0", "--json"]) == 0
    capsys.readouterr()
    assert not load_model(g, kind="spon").config.get("input_skip", False)
    assert main(["train", "spon", "--data", str(darcy.path), "--out", str(g), "--epochs", "1",
                 "--input-rank", "0", "--input-skip", "--json"]) == 2


def test_multigrid_depth_adapts_to_the_mesh(darcy):
    model = make_spon("spon-mg", darcy, width=8, layers=1, coarsest=8)
    shallow = model.n_levels
    fam = get_family("darcy", mesh=unstructured_square(16, seed=0), length=0.3)
    other = FEData.from_family(fam, [fam.sample(np.random.default_rng(0))])
    u = model.predict(other)
    assert model.n_levels > shallow and u.shape == (1, fam.basis.N)
    assert model.hierarchy[-1].pos.shape[0] <= 2 * 8
    assert torch.equal(u[:, other.dirichlet], other.lift[:, other.dirichlet])


def test_multigrid_binds_to_a_boundary_dominated_mesh(darcy):
    """unstructured_disk(32) keeps ~200 boundary nodes on every level: the hierarchy stops
    where coarsening stalls instead of refusing the mesh (issue 22)."""
    from femno.operators.fe_torch import MIN_REDUCTION, coarse_hierarchy

    mesh = unstructured_disk(32, seed=0)
    levels = coarse_hierarchy(mesh, mesh.p)
    sizes = [lv.pos.shape[0] for lv in levels]
    assert all(b <= MIN_REDUCTION * a for a, b in zip(sizes, sizes[1:], strict=False))
    model = make_spon("spon-mg", darcy, width=8, layers=1, seed=0)
    fam = get_family("darcy", mesh=mesh, length=0.3)
    other = FEData.from_family(fam, [fam.sample(np.random.default_rng(0))])
    u = model.predict(other)
    assert u.shape == (1, fam.basis.N) and torch.isfinite(u).all()
    assert torch.equal(u[:, other.dirichlet], other.lift[:, other.dirichlet])
    with pytest.warns(RuntimeWarning, match="supports 4 coarse level"):
        coarse_hierarchy(mesh, mesh.p, levels=6)
