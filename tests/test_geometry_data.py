"""Random domains, their meshes, and datasets with one mesh per sample (issue 22, item 1)."""

import json

import numpy as np
import pytest
import skfem
from skfem.helpers import dot

from femno.cli.main import main
from femno.datagen.generate_geometry import (
    generate_geometry_dataset,
    geometry_sample,
    load_geometry_sample,
)
from femno.datagen.store import DatasetStore, inspect_dataset
from femno.errors import InputError
from femno.fem.geometry import SHAPES, Domain, mesh_domain, sample_domain

pytest.importorskip("triangle")


def _square_with_hole(r=0.2):
    t = 2 * np.pi * np.arange(256) / 256
    hole = np.c_[0.5 + r * np.cos(t), 0.5 + r * np.sin(t)]
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    return Domain("polygon", [sq, hole], holes=np.array([[0.5, 0.5]]))


def test_sdf_of_a_square_with_a_hole():
    dom = _square_with_hole(0.2)
    x = np.array([[0.5, 0.5], [0.5, 0.1], [0.05, 0.5], [1.2, 0.5], [0.5, 0.75]])
    phi = dom.sdf(x)
    # hole centre: outside the domain, 0.2 from the hole's boundary (polygon: to 1e-4)
    assert phi[0] == pytest.approx(0.2, abs=2e-4)
    assert phi[1] == pytest.approx(-0.1) and phi[2] == pytest.approx(-0.05)
    assert phi[3] == pytest.approx(0.2)  # outside the square
    assert phi[4] == pytest.approx(-0.05, abs=2e-4)  # between hole and top edge
    assert dom.area() == pytest.approx(1 - np.pi * 0.04, rel=1e-3)


@pytest.mark.parametrize("kind", SHAPES)
def test_meshes_fill_the_domain_with_quality_triangles(kind):
    for s in range(3):
        dom = sample_domain(kind, np.random.default_rng(s))
        again = sample_domain(kind, np.random.default_rng(s))
        assert all(np.array_equal(a, b) for a, b in zip(dom.loops, again.loops, strict=True))
        m = mesh_domain(dom, h=0.05)
        assert m.p.min() >= 0.05 - 1e-12 and m.p.max() <= 0.95 + 1e-12
        p, t = m.p.T, m.t.T
        d1, d2 = p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]]
        area = 0.5 * np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])
        assert area.min() > 0
        assert area.max() <= np.sqrt(3) / 4 * 0.05**2 * (1 + 1e-9)
        assert area.sum() == pytest.approx(dom.area(), rel=1e-12)
        # smallest angle >= 30 degrees (Triangle's quality bound)
        ang = []
        for i in range(3):
            a, b = p[t[:, (i + 1) % 3]] - p[t[:, i]], p[t[:, (i + 2) % 3]] - p[t[:, i]]
            ang.append(np.degrees(np.arccos(np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
                                            / np.linalg.norm(b, axis=1))))
        assert np.min(ang) >= 30.0 - 1e-6
        phi = dom.sdf(p)
        bnd = m.boundary_nodes()
        assert np.abs(phi[bnd]).max() < 1e-12
        inner = np.setdiff1d(np.arange(len(p)), bnd)
        assert phi[inner].max() < 0
        # centroids lie inside (no triangle bridges a hole or a re-entrant corner)
        assert dom.sdf(p[t].mean(axis=1)).max() < 0


def test_p1_on_the_meshes_converges_at_second_order():
    """-Δu = f with u = sin(2x) e^y on an L-shape and a holed square: L2 rate about 2."""
    def exact(x):
        return np.sin(2 * x[0]) * np.exp(x[1])

    @skfem.BilinearForm
    def lap(u, v, w):
        return dot(u.grad, v.grad)

    @skfem.LinearForm
    def rhs(v, w):
        return 3.0 * np.sin(2 * w.x[0]) * np.exp(w.x[1]) * v

    @skfem.Functional
    def err2(w):
        return (w.uh - exact(w.x)) ** 2

    for dom in (sample_domain("lshape", np.random.default_rng(1)), _square_with_hole()):
        errs, hs = [], (0.1, 0.05, 0.025, 0.0125)
        for h in hs:
            m = mesh_domain(dom, h=h)
            basis = skfem.CellBasis(m, skfem.ElementTriP1(), intorder=4)
            u = basis.project(exact)
            D = basis.get_dofs().all()
            u = skfem.solve(*skfem.condense(lap.assemble(basis), rhs.assemble(basis), x=u, D=D))
            errs.append(np.sqrt(err2.assemble(basis, uh=basis.interpolate(u))))
        # unstructured meshes are not nested: fit the rate over the four levels
        rate = np.polyfit(np.log(hs), np.log(errs), 1)[0]
        assert 1.8 < rate < 2.3, (rate, errs)


@pytest.mark.parametrize("problem", ["poisson", "darcy", "elasticity"])
def test_dataset_rows_are_checked_solutions_on_their_own_meshes(tmp_path, problem):
    out = tmp_path / problem
    s = generate_geometry_dataset(problem, samples=5, out=out, h=0.08, block=2, progress=False)
    assert s["done"] == 5 and s["failures"] == 0 and s["max_residual"] < 1e-10
    store = DatasetStore.open(out)
    r = store.root
    sizes = set()
    for row in range(5):
        x = load_geometry_sample(out, row)
        m, u = x["mesh"], x["solution"]
        sizes.add(m.p.shape[1])
        again = geometry_sample(store.manifest["settings"], row)
        assert np.array_equal(again["solution"], u)  # deterministic
        assert np.all(u[x["dirichlet"]] == 0.0)
        assert np.abs(x["sdf"][x["boundary"]]).max() < 1e-12
        n = m.p.shape[1]
        assert np.all(np.isnan(r["solution"][row][n:]))  # padding past n_points
        if problem == "darcy":  # f = 1 > 0: maximum principle
            assert u.min() >= -1e-12 and u.max() > 0
        if problem == "elasticity":  # work of the load = strain energy > 0
            assert u.shape == (n, 2) and x["load"] @ u.sum(axis=0) > 0
    assert len(sizes) > 1  # one mesh per sample
    info = inspect_dataset(out)
    assert info["complete"] and sum(info["stats"]["shapes"].values()) == 5


def test_resume_recomputes_a_lost_block_bit_for_bit(tmp_path):
    out = tmp_path / "geo"
    generate_geometry_dataset("darcy", samples=5, out=out, h=0.1, block=2, progress=False)
    before = np.asarray(DatasetStore.open(out).root["solution"][:])
    DatasetStore.open(out, mode="r+").discard_block(1)
    s = generate_geometry_dataset("darcy", samples=5, out=out, h=0.1, block=2, progress=False)
    assert s["message"] == "resumed" and s["done"] == 2
    after = np.asarray(DatasetStore.open(out).root["solution"][:])
    assert np.array_equal(np.isnan(before), np.isnan(after))
    assert np.array_equal(np.nan_to_num(before), np.nan_to_num(after))
    with pytest.raises(InputError, match="h"):
        generate_geometry_dataset("darcy", samples=5, out=out, h=0.05, block=2, progress=False)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(InputError, match="shapes"):
        generate_geometry_dataset("darcy", samples=2, out=tmp_path / "a", shapes=["cube"])
    with pytest.raises(InputError, match="--geometry works for"):
        generate_geometry_dataset("helmholtz", samples=2, out=tmp_path / "b")
    with pytest.raises(InputError, match="h must"):
        mesh_domain(sample_domain("disk", np.random.default_rng(0)), h=0.0)
    with pytest.raises(InputError, match="unknown shape"):
        sample_domain("star", np.random.default_rng(0))


def test_cli_and_torch_dataset(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from femno.datagen.torch_dataset import FemnoDataset

    out = tmp_path / "cli"
    assert main(["generate", "poisson", "--geometry", "--shapes", "disk", "holes",
                 "--samples", "3", "--h", "0.1", "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["done"] == 3 and s["failures"] == 0
    assert main(["dataset", "inspect", str(out)]) == 0
    assert "a mesh per sample" in capsys.readouterr().out
    ds = FemnoDataset(out, inputs=["sdf", "coefficient"], dtype=torch.float64)
    x, y = ds[1]
    m = ds.geometry_mesh(1)
    assert x.shape == (m.p.shape[1], 4) and y.shape == (m.p.shape[1], 1)
    assert np.allclose(x[:, :2].numpy(), m.p.T)
    assert main(["generate", "poisson", "--geometry", "--n", "8", "--samples", "2",
                 "--out", str(tmp_path / "x")]) != 0


def test_geometry_models_train_and_keep_the_boundary_data(tmp_path):
    """Both geometry models fit a few meshes (loss falls), predict on meshes of other
    sizes, and vanish exactly on the Dirichlet boundary; the cached graphs give the same
    prediction as a fresh bind."""
    pytest.importorskip("torch")
    from femno.operators.geometry_models import (
        deeponet_predict,
        geometry_samples,
        relative_errors,
        spon_predict,
        train_geometry_spon,
        train_sdf_deeponet,
    )
    from femno.operators.spon import SPONMG

    out = tmp_path / "g"
    generate_geometry_dataset("darcy", samples=6, out=out, h=0.12, block=3, progress=False)
    items = geometry_samples(out)
    assert len({it["basis"].N for it in items}) > 1
    assert np.allclose(relative_errors(lambda it: it["y"], items), 0.0)
    sol = DatasetStore.open(out).root["solution"]
    n0 = items[0]["points"].shape[0]
    assert np.array_equal(items[0]["y"][items[0]["basis"].nodal_dofs[0]], sol[0][:n0, 0])
    m, h = train_geometry_spon(items[:4], width=8, layers=1, fine_layers=1, epochs=20, batch=2,
                               lr=5e-3)
    assert h["loss"][-1] < 0.7 * h["loss"][0]
    d, hd = train_sdf_deeponet(items[:4], p=8, width=16, epochs=200, batch=2, lr=3e-3)
    assert hd["loss"][-1] < 0.7 * hd["loss"][0]
    for it in items[4:]:
        for u in (spon_predict(m, it), deeponet_predict(d, it)):
            assert u.shape == it["y"].shape and np.all(np.isfinite(u))
            assert np.all(u[it["dirichlet"]] == 0.0)
    first = spon_predict(m, items[0])  # cached graph, after binding other meshes
    it = dict(items[0])
    it.pop("_spon_state")
    assert np.allclose(spon_predict(m, it), first, rtol=0, atol=1e-6 * np.abs(first).max())
    with pytest.raises(InputError, match="positions"):
        SPONMG(channels=["a"], positions="grid")


def test_mesh_size_range_draws_one_per_sample(tmp_path):
    """--h LO HI: each sample meshes at its own size from the range, reproducibly; the
    edge lengths span the range; a bad range is refused."""
    from femno.datagen.generate_geometry import sample_h

    kw = dict(samples=6, shapes=["disk"], h=(0.04, 0.12), block=3, progress=False)
    generate_geometry_dataset("poisson", out=tmp_path / "a", **kw)
    generate_geometry_dataset("poisson", out=tmp_path / "b", **kw)
    ra, rb = DatasetStore.open(tmp_path / "a").root, DatasetStore.open(tmp_path / "b").root
    assert np.array_equal(ra["mesh/n_points"][:], rb["mesh/n_points"][:])
    assert np.array_equal(ra["solution"][:], rb["solution"][:], equal_nan=True)
    settings = DatasetStore.open(tmp_path / "a").manifest["settings"]
    hs = [sample_h(settings, i) for i in range(6)]
    assert all(0.04 <= v <= 0.12 for v in hs) and max(hs) - min(hs) > 0.02
    n = ra["mesh/n_points"][:]
    assert n[int(np.argmin(hs))] > n[int(np.argmax(hs))]  # finer mesh, more vertices
    for bad in ((0.1, 0.05), (0.05, -1.0), (0.01, 0.02, 0.03)):
        with pytest.raises(InputError, match="range"):
            generate_geometry_dataset("poisson", out=tmp_path / "c", samples=2, h=bad)
