"""Geometry surrogates as files: train, save, evaluate, warn (issue 22, item 4)."""

import json

import numpy as np
import pytest
import skfem

from femno.cli.main import main
from femno.datagen.generate_geometry import generate_geometry_dataset
from femno.errors import InputError
from femno.fem.geometry import mesh_domain, mesh_sdf, sample_domain

pytest.importorskip("triangle")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("geo")
    train, test = root / "train", root / "test"
    generate_geometry_dataset("darcy", samples=6, out=train, shapes=["disk", "holes"], h=0.12,
                              block=3, progress=False)
    generate_geometry_dataset("darcy", samples=3, out=test, shapes=["tshape"], h=0.025,
                              seed=7, block=3, progress=False)
    return root, train, test


@pytest.mark.parametrize("kind", ["holes", "lshape"])
def test_mesh_sdf_is_the_domain_sdf_on_its_mesh(kind):
    """The boundary facets of a Triangle mesh are the domain's own segments (split at
    inserted vertices), so the distance to them is the domain's signed distance."""
    dom = sample_domain(kind, np.random.default_rng(3))
    mesh = mesh_domain(dom, h=0.08)
    exact = dom.sdf(mesh.p.T)
    assert np.all(exact < 1e-12)  # vertices lie in the closed domain
    assert np.allclose(mesh_sdf(mesh), exact, rtol=0, atol=1e-12)


def test_train_eval_cli_warns_on_unseen_shapes_and_mesh_sizes(data, capsys):
    root, train, test = data
    model = root / "don.pt"
    assert main(["train", "geometry", "--data", str(train), "--arch", "sdf-deeponet",
                 "--minutes", "0.05", "--width", "16", "--out", str(model), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["samples"] == 6 and s["epochs"] >= 1 and model.is_file()
    png = root / "eval.png"
    assert main(["eval", "--model", str(model), "--data", str(test), "--json",
                 "--plot", str(png)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 3 and r["outside"] == 3 and png.stat().st_size > 0
    assert set(r["per_shape"]) == {"tshape"}
    assert any("never saw (tshape" in w for w in r["warnings"])
    assert any("mesh size h" in w for w in r["warnings"])  # h 0.025 vs 0.12: mean edges 0.02-0.03 vs 0.05
    assert r["boundary_max"] == 0.0  # the trunk's factor vanishes on the boundary
    assert 0 < r["rel_l2_median"] <= r["rel_l2_p90"] <= r["rel_l2_max"]
    # on its own training data nothing is flagged
    assert main(["eval", "--model", str(model), "--data", str(train), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["outside"] == 0 and r["warnings"] == []
    # the table output lists per-shape medians and the warnings
    assert main(["eval", "--model", str(model), "--data", str(test)]) == 0
    out = capsys.readouterr().out
    assert "median rel L2, tshape" in out and "warning:" in out


def test_saved_models_predict_as_trained_and_errors_match(data):
    from femno.operators.checkpoint import load_model
    from femno.operators.geometry_models import geometry_samples, relative_errors
    from femno.operators.geometry_surrogate import (
        evaluate_geometry_model,
        geometry_predict,
        train_geometry_model,
    )

    root, train, test = data
    items = geometry_samples(test)
    for arch in ("spon-mg", "sdf-deeponet"):
        path = root / f"{arch}.pt"
        m, s = train_geometry_model(train, arch=arch, out=path, minutes=0.03, width=8)
        m2 = load_model(path)
        assert m2.meta["geometry_data"]["shapes"] == ["disk", "holes"]
        edges = [np.linalg.norm(np.diff(it["basis"].mesh.p[:, it["basis"].mesh.facets], axis=1),
                                axis=0).mean() for it in geometry_samples(train)]
        assert np.allclose(m2.meta["geometry_data"]["h"], [min(edges), max(edges)])
        for it in items:
            a, b = geometry_predict(m, it), geometry_predict(m2, dict(it, _spon_state=None))
            assert np.allclose(a, b, rtol=0, atol=1e-6 * max(np.abs(a).max(), 1e-30))
            assert np.all(b[it["dirichlet"]] == 0.0)
        r = evaluate_geometry_model(m2, test)
        direct = relative_errors(lambda it, _m=m2: geometry_predict(_m, it), items)
        assert np.allclose(r["rel_l2"], direct, rtol=1e-10)


def test_predict_on_a_user_mesh_and_its_warnings(data):
    from femno.operators.geometry_surrogate import predict_on_mesh, train_geometry_model

    root, train, _ = data
    m, _ = train_geometry_model(train, arch="sdf-deeponet", minutes=0.02, width=8)
    mesh = skfem.MeshTri().refined(3)
    mesh = skfem.MeshTri(0.3 + 0.4 * mesh.p, mesh.t)  # a square inside the training box
    coef = np.ones(mesh.p.shape[1])
    with pytest.warns(RuntimeWarning, match="extrapolates") as rec:
        u = predict_on_mesh(m, mesh, coef)
    assert u.shape == (mesh.p.shape[1], 1) and np.all(np.isfinite(u))
    assert np.all(u[mesh.boundary_nodes(), 0] == 0.0)
    assert not any("coefficient" in str(w.message) for w in rec)  # a = 1 lies in e^g's range
    with pytest.warns(RuntimeWarning) as rec:
        predict_on_mesh(m, mesh, 1e3 * coef)
    assert any("coefficient outside" in str(w.message) for w in rec)
    with pytest.raises(InputError, match="shape"):
        predict_on_mesh(m, mesh, coef[:-1])
    with pytest.raises(InputError, match="triangle"):
        predict_on_mesh(m, skfem.MeshQuad(), np.ones(4))


def test_mismatched_models_and_data_are_refused(data, tmp_path):
    from femno.operators.geometry_surrogate import evaluate_geometry_model, train_geometry_model

    root, train, _ = data
    m, _ = train_geometry_model(train, arch="spon-mg", minutes=0.02, width=8)
    ela = tmp_path / "ela"
    generate_geometry_dataset("elasticity", samples=2, out=ela, h=0.15, block=2, progress=False)
    with pytest.raises(InputError, match="trained on 'darcy'"):
        evaluate_geometry_model(m, ela)
    with pytest.raises(InputError, match="geometry architecture"):
        train_geometry_model(train, arch="fno")
    with pytest.raises(InputError, match="minutes"):
        train_geometry_model(train, minutes=0)


def test_elasticity_models_read_the_load_and_clamp_only_the_clamped_part(tmp_path):
    """Elasticity is clamped on part of the boundary: both models vanish exactly on the
    clamped vertices but not on the traction-free boundary, and read the body force
    (a flipped load changes the prediction)."""
    from femno.operators.geometry_models import (
        X_CHANNELS,
        deeponet_predict,
        geometry_samples,
        spon_predict,
        train_geometry_spon,
        train_sdf_deeponet,
    )

    out = tmp_path / "ela"
    generate_geometry_dataset("elasticity", samples=4, out=out, shapes=["lshape"], h=0.12,
                              block=2, progress=False)
    items = geometry_samples(out)
    assert items[0]["x"].shape[0] == len(X_CHANNELS)
    assert np.allclose(np.linalg.norm(items[0]["load"]), 1.0)
    m, _ = train_geometry_spon(items[:3], width=8, layers=1, fine_layers=1, epochs=2, batch=2)
    assert m.config["channels"] == ["coefficient", "sdf", "load_x", "load_y"]
    d, _ = train_sdf_deeponet(items[:3], p=8, width=16, epochs=5, batch=2)
    it = items[3]
    nd = it["basis"].nodal_dofs
    free_bnd = np.zeros(len(it["clamp"]), dtype=bool)
    free_bnd[it["basis"].mesh.boundary_nodes()] = True
    free_bnd &= ~it["clamp"]
    assert it["clamp"].any() and free_bnd.any()
    flipped = dict(it, load=-it["load"], x=it["x"].copy())
    flipped["x"][2:] *= -1
    flipped.pop("_spon_state", None)
    for predict in (spon_predict, deeponet_predict):
        u = predict(m if predict is spon_predict else d, it)
        assert np.all(u[it["dirichlet"]] == 0.0)
        assert np.abs(u[nd[:, free_bnd]]).max() > 0
        assert not np.allclose(predict(m if predict is spon_predict else d, flipped), u)


def test_a_users_mesh_file_becomes_a_dataset_the_model_is_checked_on(data, tmp_path, capsys):
    """femno generate --geometry --mesh FILE solves every sample on the user's mesh (true
    residuals, the mesh's own sdf), and femno eval checks a geometry model there, naming
    the shape it never saw."""
    from femno.datagen.geometry_rows import read_geometry_row
    from femno.datagen.store import DatasetStore
    from femno.operators.geometry_surrogate import train_geometry_model

    root, train, _ = data
    mesh = skfem.MeshTri.init_circle(3)
    mesh = skfem.MeshTri(0.5 + 0.4 * mesh.p, mesh.t)
    path = tmp_path / "mine.msh"
    mesh.save(str(path))
    out = tmp_path / "mine"
    assert main(["generate", "darcy", "--geometry", "--mesh", str(path), "--samples", "3",
                 "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["done"] == 3 and s["failures"] == 0 and s["max_residual"] < 1e-10
    store = DatasetStore.open(out)
    assert store.manifest["layout"]["geometry"]["shapes"] == ["user"]
    rows = [read_geometry_row(store.root, r) for r in range(3)]
    for r in rows:
        assert np.allclose(r["mesh"].p, mesh.p) and np.array_equal(r["mesh"].t, mesh.t)
        assert np.allclose(r["sdf"], mesh_sdf(mesh))
    assert not np.allclose(rows[0]["coefficient"], rows[1]["coefficient"])  # new draws
    model = root / "geo-user.pt"
    train_geometry_model(train, arch="spon-mg", out=model, minutes=0.02, width=8)
    assert main(["eval", "--model", str(model), "--data", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["samples"] == 3 and set(r["per_shape"]) == {"user"}
    assert any("never saw (user" in w for w in r["warnings"])
    assert main(["generate", "darcy", "--mesh", str(path), "--samples", "2",
                 "--out", str(tmp_path / "x")]) != 0  # --mesh needs --geometry
    with pytest.raises(InputError, match="triangle"):
        generate_geometry_dataset("darcy", samples=1, out=tmp_path / "q", mesh=skfem.MeshQuad())


@pytest.mark.parametrize("arch", ["spon-mg", "sdf-deeponet"])
def test_interrupted_geometry_training_resumes_to_the_same_weights(data, tmp_path, monkeypatch,
                                                                   arch):
    """Killed after an epoch's state was written, a resumed run ends with the weights of an
    uninterrupted one (no time limit: the schedule counts steps, so it is deterministic);
    a state of another run is refused."""
    import femno.operators.geometry_models as gm

    _, train, _ = data
    items = gm.geometry_samples(train)
    if arch == "spon-mg":
        def run(**kw):
            return gm.train_geometry_spon(items, width=8, layers=1, fine_layers=1, epochs=4,
                                          batch=3, seed=2, **kw)
    else:
        def run(**kw):
            return gm.train_sdf_deeponet(items, p=8, width=16, epochs=20, batch=3, seed=2, **kw)
    full, _ = run()
    state = tmp_path / "m.state"
    save = gm._save_state
    calls = {"n": 0}

    def killed_after_first(*a, **kw):
        save(*a, **kw)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(gm, "_save_state", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=state)
    monkeypatch.setattr(gm, "_save_state", save)
    assert calls["n"] == 1 and state.is_file()
    resumed, hist = run(checkpoint=state, resume=True)
    assert hist["resumed_from"] > 0
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(InputError, match="another training run"):
        (gm.train_geometry_spon(items, width=16, epochs=4, checkpoint=state, resume=True)
         if arch == "spon-mg" else
         gm.train_sdf_deeponet(items, p=8, width=32, epochs=20, checkpoint=state, resume=True))
