"""`femno eval`: a trained model's errors on any dataset, with extrapolation warnings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from femno.cli.main import main
from femno.datagen import generate_dataset
from femno.operators.checkpoint import load_model, save_model
from femno.operators.fe_data import FEData

pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import meshio

    from femno.fem.mesh import unstructured_disk
    from femno.operators.baselines import build_baseline
    from femno.operators.spon_train import evaluate, train_spon

    d = tmp_path_factory.mktemp("eval")
    train = d / "train.femno"
    generate_dataset("darcy", samples=10, out=train, method="direct", block=10,
                     family_options={"n": 8, "length": 0.3}, progress=False)
    m = unstructured_disk(5, seed=1)
    meshio.write(d / "disk.msh", meshio.Mesh(m.p.T, [("triangle", m.t.T)]), file_format="gmsh22")
    disk = d / "disk.femno"
    generate_dataset("darcy", samples=4, out=disk, method="direct", block=4,
                     family_options={"mesh": str(d / "disk.msh"), "length": 0.3}, progress=False)
    fine = d / "fine.femno"
    generate_dataset("darcy", samples=3, out=fine, method="direct", block=3,
                     family_options={"n": 20, "length": 0.3}, progress=False)
    data = FEData.from_dataset(train)
    model, _ = train_spon(data, arch="spon", width=8, layers=2, epochs=3, val_fraction=0.0,
                          out=d / "spon.pt", progress=False)
    fno = build_baseline("deeponet", data, width=16, depth=2, p=8)
    from femno.operators.surrogate import data_meta

    fno.meta = {"data": data_meta(data)}
    save_model(fno, d / "don.pt", meta=fno.meta)
    return {"dir": d, "train": train, "disk": disk, "fine": fine, "data": data,
            "ref": evaluate(load_model(d / "spon.pt"), data)}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_matches_the_training_evaluation(setup, capsys):
    s = setup
    code, out, _ = run(capsys, "eval", "--model", str(s["dir"] / "spon.pt"), "--data",
                       str(s["train"]), "--json", "--worst", "3")
    res = json.loads(out)
    assert code == 0 and res["samples"] == 10 and len(res["worst"]) == 3
    assert res["rel_l2_mean"] == pytest.approx(s["ref"]["rel_l2_mean"], rel=1e-10)
    assert res["rel_l2_max"] == pytest.approx(s["ref"]["rel_l2_max"], rel=1e-10)
    assert res["rel_l2_median"] <= res["rel_l2_p90"] <= res["rel_l2_max"]
    assert res["worst"][0]["rel_l2"] == pytest.approx(res["rel_l2_max"])
    assert res["boundary_max"] == 0.0  # SPON lifts the Dirichlet data exactly
    assert res["warnings"] == []  # its own training data


def test_eval_on_another_geometry_warns_and_plots(setup, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    s = setup
    png = tmp_path / "e.png"
    code, out, _ = run(capsys, "eval", "--model", str(s["dir"] / "spon.pt"), "--data",
                       str(s["disk"]), "--json", "--plot", str(png))
    res = json.loads(out)
    assert code == 0 and res["samples"] == 4 and png.stat().st_size > 1000
    assert any("another geometry" in w for w in res["warnings"])
    assert np.isfinite(res["rel_l2_mean"])
    code, out, _ = run(capsys, "eval", "--model", str(s["dir"] / "spon.pt"), "--data",
                       str(s["fine"]), "--json")
    res = json.loads(out)
    assert code == 0 and any("another resolution" in w for w in res["warnings"])
    assert not any("another geometry" in w for w in res["warnings"])


def test_eval_refuses_mesh_bound_models_elsewhere_and_bad_input(setup, capsys):
    s = setup
    code, out, _ = run(capsys, "eval", "--model", str(s["dir"] / "don.pt"), "--data",
                       str(s["train"]), "--json")
    assert code == 0 and json.loads(out)["samples"] == 10
    code, _, err = run(capsys, "eval", "--model", str(s["dir"] / "don.pt"), "--data",
                       str(s["disk"]))
    assert code == 2 and "needs its training mesh" in err
    code, _, err = run(capsys, "eval", "--model", str(s["dir"] / "nope.pt"), "--data",
                       str(s["train"]))
    assert code == 2
    code, _, err = run(capsys, "eval", "--model", str(s["dir"] / "spon.pt"), "--data",
                       str(s["train"]), "--batch-size", "0")
    assert code == 2 and "--batch-size" in err


def test_old_models_get_a_note_not_a_crash(setup):
    from femno.operators.evaluation import domain_report

    model = load_model(setup["dir"] / "spon.pt")
    for key in ("h", "bbox", "input_range"):
        model.meta["data"].pop(key)
    assert "no extrapolation check" in domain_report(model, setup["data"])[0]


def test_warnings_name_geometry_and_mesh_changes(setup):
    from femno.fem.mesh import lshape, unit_square, unstructured_square
    from femno.operators.surrogate import data_meta, extrapolation_warnings

    meta = data_meta(setup["data"])  # unit square, 8 cells per side
    assert extrapolation_warnings(meta, unit_square(8)) == []
    (w,) = extrapolation_warnings(meta, lshape(6))  # same bounding box, 75 % of it
    assert "fills 75 %" in w and "another geometry" in w
    (w,) = extrapolation_warnings(meta, unstructured_square(8, seed=3))
    assert "another mesh of the same domain" in w
    assert any("another resolution" in w for w in extrapolation_warnings(meta, unit_square(24)))
